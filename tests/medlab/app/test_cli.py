"""The parameter machinery: precedence with sources, edits recognised against the lab defaults,
the table, a help sentence for every option of every script and subcommand, and no abbreviations."""

import argparse
import subprocess
import sys

import pytest
from helpers import ROOT

import cam_vgg16
import main_segmentation
import transfer_vgg16
from medlab.app.cli import Parser, add_parameter_flags, edits, parameter_rows, resolve
from medlab.errors import UserError
from medlab.parameters import Param

DECLARED = {
    "epochs": Param(150, "training epochs", "training", 1),
    "lr": Param(1e-4, "learning rate", "training", 1e-12),
    "loss": Param("bce", "training loss", "training", choices=("bce", "dice")),
    "size": Param(256, "input size", "model", 1),
    "seed": Param(0, "seed", "training", 0),
    "base": Param(8, "filters", "model", 1),
}
LAB_BLOCK = {name: param.default for name, param in DECLARED.items()}


def test_each_layer_wins_over_the_ones_before_and_says_so():
    block = {**LAB_BLOCK, "epochs": 2, "loss": "dice", "lr": 5e-4}  # three edits
    resolved = resolve(
        DECLARED,
        block,
        typed={"seed": 7},
        demo={"epochs": 16, "size": 64, "lr": 7e-4},
        preset={"lr": 1e-3},
        experiment={"loss": "bce"},
    )
    assert resolved.values == {
        "epochs": 2,  # the edit beats the demo
        "lr": 1e-3,  # the preset beats the edit
        "loss": "bce",  # the experiment beats the edit
        "size": 64,  # the demo beats the lab default nobody edited
        "seed": 7,  # the flag
        "base": 8,
    }
    assert resolved.sources == {
        "epochs": "edited",
        "lr": "preset",
        "loss": "experiment",
        "size": "demo",
        "seed": "flag",
        "base": "lab",
    }
    assert resolved.cell("epochs") == "2 (edited)"
    assert resolved.cell("loss") == "bce (experiment; edited dice overridden)"
    assert resolved.cell("lr") == "0.001 (preset; edited 0.0005 overridden)"
    flagged = resolve(DECLARED, block, typed={"epochs": 3}, demo={"epochs": 16})
    assert flagged.cell("epochs") == "3 (flag; edited 2 overridden)"


def test_an_edit_is_a_value_that_differs_from_the_lab_default():
    assert edits(LAB_BLOCK, DECLARED, "PARAMETERS") == {}
    assert edits({**LAB_BLOCK, "epochs": 2, "lr": 0.0001}, DECLARED, "PARAMETERS") == {"epochs": 2}
    with pytest.raises(
        UserError, match="PARAMETERS has no parameter 'epoch'; did you mean 'epochs'"
    ):
        edits({**LAB_BLOCK, "epoch": 2}, DECLARED, "PARAMETERS")


def test_block_and_layer_values_are_checked_like_flags():
    with pytest.raises(UserError, match=r"--epochs 0 is out of range >= 1"):
        resolve(DECLARED, {**LAB_BLOCK, "epochs": 0}, {})
    with pytest.raises(UserError, match="--epochs '2' is not a whole number"):
        resolve(DECLARED, {**LAB_BLOCK, "epochs": "2"}, {})
    with pytest.raises(UserError, match="--loss focal is unknown; choose one of bce, dice"):
        resolve(DECLARED, LAB_BLOCK, {}, experiment={"loss": "focal"})


def test_the_table_has_a_column_per_experiment():
    runs = {
        name: resolve(DECLARED, {**LAB_BLOCK, "epochs": 2}, {}, experiment={"loss": loss})
        for name, loss in (("4a", "bce"), ("4b", "dice"))
    }
    rows, columns = parameter_rows(runs, ["epochs", "loss"])
    assert columns == ["parameter", "4a", "4b"]
    assert rows == [
        {"parameter": "epochs", "4a": "2 (edited)", "4b": "2 (edited)"},
        {"parameter": "loss", "4a": "bce (experiment)", "4b": "dice (experiment)"},
    ]


def test_the_help_shows_the_default_once_and_what_the_demo_replaces_it_with():
    parser = Parser(prog="demo.py")
    add_parameter_flags(parser, DECLARED, {"epochs": 16})
    text = " ".join(parser.format_help().split())
    assert "training epochs (>= 1; default: 150; the synthetic demo: 16)" in text
    assert text.count("default: 150") == 1 and "None" not in text
    assert "{bce,dice}" in text


def test_the_shipped_blocks_hold_the_lab_defaults_of_every_declared_parameter():
    """A fresh clone has no edits: each script's block lists every declared parameter with the
    lab's value, so the table says `lab` (or `demo`) until the user changes a line."""
    from medlab.app.classification import cam_parameters, transfer_parameters
    from medlab.app.segmentation import parameters as segmentation_parameters

    for script, declared in (
        (main_segmentation, segmentation_parameters.DECLARED),
        (cam_vgg16, cam_parameters.DECLARED),
        (transfer_vgg16, transfer_parameters.DECLARED),
    ):
        assert list(script.PARAMETERS) == list(declared) or set(script.PARAMETERS) == set(
            declared
        ), script.__name__
        assert edits(script.PARAMETERS, declared, script.__name__) == {}, script.__name__
        for name, value in script.PARAMETERS.items():
            assert type(value) is type(declared[name].default), (script.__name__, name)


def option_helps(parser):
    """{option: its help} of every option of an argparse parser."""
    return {
        action.option_strings[0] if action.option_strings else action.dest: action.help
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
    }


def every_parser():
    """The training parser and every subcommand parser of the three scripts, built as --help
    builds them (argparse exits after printing; the parser is caught on its way)."""
    parsers = {}
    original = Parser.parse_args

    def capture(self, args=None, namespace=None):
        parsers[self.prog] = self
        raise SystemExit(0)

    Parser.parse_args = capture
    try:
        for script in (main_segmentation, cam_vgg16, transfer_vgg16):
            for command in ("", *script.COMMANDS):
                with pytest.raises(SystemExit):
                    script.main([command, "--help"] if command else ["--help"])
    finally:
        Parser.parse_args = original
    return parsers


def test_every_option_of_every_script_and_subcommand_has_a_sentence():
    parsers = every_parser()
    assert set(parsers) == {
        "main_segmentation.py",
        "main_segmentation.py predict",
        "main_segmentation.py evaluate",
        "cam_vgg16.py",
        "cam_vgg16.py explain",
        "transfer_vgg16.py",
        "transfer_vgg16.py predict",
    }
    for prog, parser in parsers.items():
        for option, text in option_helps(parser).items():
            assert text and len(text.split()) >= 2, f"{prog} {option} has no help sentence"
            assert "(default: None)" not in text and "(default: )" not in text, (prog, option)
    for script in ("main_segmentation.py", "cam_vgg16.py", "transfer_vgg16.py"):
        epilog = parsers[script].epilog
        assert "examples:" in epilog and epilog.count("python ") >= 3, script
        for command in {"main_segmentation.py": ("predict", "evaluate")}.get(
            script, ("explain",) if script == "cam_vgg16.py" else ("predict",)
        ):
            assert f"{script} {command}" in epilog, (script, command)


def test_an_abbreviated_flag_is_refused_with_the_flag_it_resembles():
    result = subprocess.run(
        [sys.executable, str(ROOT / "main_segmentation.py"), "--epoch", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unrecognized arguments: --epoch 3")
    assert "did you mean --epochs?" in lines[0]


@pytest.mark.parametrize(
    "script, demo",
    [(cam_vgg16, cam_vgg16.SYNTHETIC_DEMO), (transfer_vgg16, transfer_vgg16.SYNTHETIC_DEMO)],
)
def test_an_edited_epochs_beats_the_demo_of_both_classifiers(script, demo, monkeypatch, capsys):
    from helpers import script_of

    from medlab.app.classification.script import print_parameters, resolve

    def resolve_parameters(typed, demo, preset):  # as a run does: resolved, then printed
        resolved = resolve(script_of(script), typed, demo, preset)
        print_parameters(script_of(script), resolved, preset)
        return resolved

    assert resolve_parameters({}, demo, None).cell("epochs") == f"{demo['epochs']} (demo)"
    monkeypatch.setitem(script.PARAMETERS, "epochs", 2)
    resolved = resolve_parameters({}, demo, None)
    assert resolved.values["epochs"] == 2 and resolved.cell("epochs") == "2 (edited)"
    assert "2 (edited)" in capsys.readouterr().out  # the table every run prints
    flagged = resolve_parameters({"epochs": 3}, demo, "recommended")
    assert flagged.cell("epochs") == "3 (flag; edited 2 overridden)"
    assert "value (source; --preset recommended)" in capsys.readouterr().out  # the preset named


def test_the_declared_choices_are_the_ones_the_library_implements():
    """Named in the declarations so that --help answers without TensorFlow; they must agree."""
    import unet
    from medlab.app.classification.cam_parameters import POOLINGS
    from medlab.app.segmentation.parameters import DECLARED as SEGMENTATION
    from medlab.classification import vgg

    assert SEGMENTATION["loss"].choices == tuple(unet.LOSSES)
    assert SEGMENTATION["normalize"].choices == unet.NORMALIZATIONS
    assert set(POOLINGS) == {"flatten", *vgg.POOLING}
