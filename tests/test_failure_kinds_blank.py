"""Kind 5 of the failures: values that mean "nothing". Every value any command of any script takes
(each flag and each argument, found from the parsers themselves, so a new flag is covered without
being listed) is given "" and " ": each must be one `error:` line naming it, exit code 2, and
nothing written. A `KERAS_BACKEND` a script cannot run on is one line too."""

import contextlib
import importlib
import io
from pathlib import Path

import pytest

from medlab.app import cli

ROOT = Path(__file__).resolve().parents[1]
# Every root script with a `main`, found by reading them.
SCRIPTS = sorted(path.stem for path in ROOT.glob("*.py") if "\ndef main(" in path.read_text())
BLANKS = ("", " ")


def commands(module):
    """The first words that pick each command of a script: training (none), then its COMMANDS."""
    return [[], *([name] for name in module.COMMANDS)]


def parsers_of(module, command, monkeypatch):
    """The parsers a command builds, caught as its `--help` prints them."""
    seen = []
    monkeypatch.setattr(cli.Parser, "print_help", lambda self, file=None: seen.append(self))
    with pytest.raises(SystemExit):
        module.main([*command, "--help"])
    monkeypatch.undo()
    assert seen, f"{module.__name__} {command} built no cli.Parser"
    return seen


def blank_cases(parser):
    """(the name shown, the arguments) for each value the parser takes, given each blank."""
    positionals = [a for a in parser._actions if not a.option_strings]
    for action in parser._actions:
        if action.nargs == 0 or action.help == "==SUPPRESS==":
            continue  # a switch (--help, --no-x) takes no value
        for blank in BLANKS:
            if action.option_strings:
                name = action.option_strings[0]
                yield name, [name, blank]
            else:
                before = positionals[: positionals.index(action)]
                name = action.metavar or action.dest
                yield name, [*(["x.png"] * len(before)), blank]


def test_scripts_are_found():
    assert {"main_segmentation", "cam_vgg16", "transfer_vgg16"} <= set(SCRIPTS)


class Accepted(Exception):
    """The parser let a blank value through: the command would go on with it."""


def stop_after_parsing(monkeypatch):
    parse_args = cli.Parser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise Accepted()

    monkeypatch.setattr(cli.Parser, "parse_args", parse_then_stop)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_value_of_every_command_refuses_blanks(name, tmp_path, monkeypatch, capsys):
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)  # whatever a command would write lands here
    failures, count = [], 0
    for command in commands(module):
        for parser in parsers_of(module, command, monkeypatch):
            stop_after_parsing(monkeypatch)
            for shown, args in blank_cases(parser):
                count += 1
                argv = [*command, *args]
                capsys.readouterr()
                code = None
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        module.main(argv)
                    except SystemExit as stop:
                        code = stop.code
                    except Exception as error:  # noqa: BLE001  (a traceback is a failure)
                        code = repr(error)
                err = capsys.readouterr().err.strip()
                one_line = err.startswith("error: ") and "\n" not in err and shown in err
                if code != 2 or not one_line or any(tmp_path.iterdir()):
                    failures.append(f"{name} {argv}: exit {code}, {err[:120]!r}")
    assert count > 20, count
    assert not failures, f"{len(failures)} of {count} cases:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("backend", ["tensorflw", "torch", "jax "])
def test_a_backend_a_script_cannot_run_on_is_one_line(name, backend, monkeypatch, capsys):
    module = importlib.import_module(name)
    monkeypatch.setenv("KERAS_BACKEND", backend)
    monkeypatch.setattr("sys.argv", [f"{name}.py"])
    stop_after_parsing(monkeypatch)  # refused before the flags are read, or not at all
    with pytest.raises(SystemExit) as stop:
        module.main(["--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: KERAS_BACKEND=") and "\n" not in err


def test_a_backend_not_installed_is_named(monkeypatch, capsys):
    import main_segmentation

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    stop_after_parsing(monkeypatch)
    with pytest.raises(SystemExit):
        main_segmentation.main(["--epochs", "1"])
    assert "jax is not installed" in capsys.readouterr().err
