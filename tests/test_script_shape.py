"""The three task scripts share one skeleton a student can rely on (CONTRIBUTING.md): docstring
with three example commands, PARAMETERS, the named settings, SYNTHETIC_DEMO, `main`, the pipeline
`train`, the subcommands, COMMANDS, in that order; and every function of the four task files
fits on a screen. Read with `ast`, so nothing is imported."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # not tests/helpers.py: it starts TensorFlow
NAMED_SETTINGS = {
    "main_segmentation.py": "EXPERIMENTS",
    "cam_vgg16.py": "PRESETS",
    "transfer_vgg16.py": "PRESETS",
}
LONGEST_FUNCTION = 60  # lines
LONGEST_CLASSIFIER_SCRIPT = 300  # lines


def top_level_names(tree):
    """{name: line} of the module's top-level assignments and functions."""
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node.lineno
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, node.lineno)
    return names


@pytest.mark.parametrize("script", list(NAMED_SETTINGS))
def test_each_script_follows_the_skeleton(script):
    tree = ast.parse((ROOT / script).read_text())
    names = top_level_names(tree)
    order = ["PARAMETERS", NAMED_SETTINGS[script], "SYNTHETIC_DEMO", "main", "train", "COMMANDS"]
    missing = [name for name in order if name not in names]
    assert not missing, f"{script} has no {missing}"
    lines = [names[name] for name in order]
    assert lines == sorted(lines), f"{script}: {dict(zip(order, lines))} is not the skeleton order"
    docstring = ast.get_docstring(tree)
    examples = [line for line in docstring.splitlines() if line.strip().startswith("python ")]
    assert len(examples) == 3, f"{script}'s docstring shows {len(examples)} example commands"
    commands = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMMANDS"
    )
    for value in commands.values:  # each subcommand is a function defined before COMMANDS
        assert names[value.id] < names["COMMANDS"], (script, value.id)


@pytest.mark.parametrize("script", ["cam_vgg16.py", "transfer_vgg16.py"])
def test_the_classifier_scripts_show_the_method_not_the_plumbing(script):
    lines = (ROOT / script).read_text().count("\n")
    assert lines <= LONGEST_CLASSIFIER_SCRIPT, f"{script} has {lines} lines"


@pytest.mark.parametrize("path", [*NAMED_SETTINGS, "unet.py"])
def test_every_function_of_the_task_files_fits_on_a_screen(path):
    tree = ast.parse((ROOT / path).read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    long = {f.name: f.end_lineno - f.lineno + 1 for f in functions}
    long = {name: n for name, n in long.items() if n > LONGEST_FUNCTION}
    assert not long, f"{path}: functions over {LONGEST_FUNCTION} lines: {long}"


def test_no_script_hands_itself_to_the_application_layer():
    """The app layer gets a script's settings by keyword, where the student reads them."""
    for script in NAMED_SETTINGS:
        assert "sys.modules" not in (ROOT / script).read_text(), script
