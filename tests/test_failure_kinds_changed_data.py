"""Kind 1 of the failures: inputs that change under a run. Every script with `--resume` (found from
its parser) is killed mid-training; then its data is changed in each way a file set can change
(a file added, removed, altered in place, renamed) and `--resume` must refuse in one line, exit 2,
with the run folder untouched. A `--folds`
experiment with an unfinished fold is refused as an ensemble by every command that takes a model
(found from the parsers), and `evaluate --held-out` refuses images altered since validation.
With the data as it was, the same killed runs resume to the end (test_classifier_crash.py and the
segmentation test here), so the check refuses only what changed."""

import contextlib
import importlib
import io
import os
import shutil
import signal
from pathlib import Path

import cv2
import pytest

from medlab.classification.data import load_class_split
from medlab.pairs import find_pairs
from medlab.synthetic.skin_bone import synthetic_class_set
from medlab.synthetic.xray import write_chest_xrays
from tests.conftest import run_script
from tests.test_failure_kinds_blank import SCRIPTS, commands, parsers_of

TINY = {
    "main_segmentation": "--size 32 --depth 2 --base 2 --batch-size 4 --epochs 1 --experiments 4a"
    " --folds 2",
    "cam_vgg16": "--size 32 --base 2 --epochs 2 --batch-size 4 --grid-images 2 --sanity-images 2",
    "transfer_vgg16": "--weights none --epochs 2 --image-size 32 --scratch-size 32 --bootstrap 100"
    " --batch-size 4",
}
# The batch at which each is killed: segmentation in its second fold (the first has 2 batches).
KILLED_AT = {"main_segmentation": 3, "cam_vgg16": 1, "transfer_vgg16": 1}


def data_files(root):
    """The data files a run on `root` reads, as the project lists them: every image and mask
    (segmentation), or every image of the split (classifiers)."""
    if (Path(root) / "Image").is_dir():
        images, masks = find_pairs(root)
        return [*images, *masks]
    split = load_class_split(root)
    return [*split.train_paths, *split.val_paths]


def by_folder(files):
    """{folder: its files}: Image/ and Mask/, or each class folder."""
    folders = {}
    for path in files:
        folders.setdefault(path.parent, []).append(path)
    return folders


def add(files):
    for first, *_ in by_folder(files).values():
        shutil.copy(first, first.with_name(f"added_{first.name}"))


def remove(files):
    for *_, last in by_folder(files).values():
        last.unlink()


def alter(files):
    path = files[0]  # one file, same name: a patch of it inverted
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    image[:4, :4] = 255 - image[:4, :4]
    cv2.imwrite(str(path), image)


def rename(files):
    for first, *_ in by_folder(files).values():
        first.rename(first.with_name(f"renamed_{first.name}"))


CHANGES = {"added": add, "removed": remove, "changed": alter, "renamed": rename}
SAYS = {"added": ["added"], "removed": ["removed"], "changed": ["changed"]}
SAYS["renamed"] = ["added", "removed"]


def resuming_scripts():
    """The scripts whose training command takes --resume."""
    found = []
    for name in SCRIPTS:
        module = importlib.import_module(name)
        with pytest.MonkeyPatch.context() as patch:
            (parser, *_) = parsers_of(module, [], patch)
        if any("--resume" in action.option_strings for action in parser._actions):
            found.append(name)
    return found


def test_every_resumable_script_is_covered():
    assert set(resuming_scripts()) == set(TINY)


def killed_run(name, tmp_path):
    """(data folder, run folder to --resume) of a tiny run of `name` killed mid-training."""
    if name == "main_segmentation":
        data = tmp_path / "X_ray"
        write_chest_xrays(data, 10, 32, seed=3)
    else:
        data = synthetic_class_set("bone", n_train=8, n_val=4, size=64, root=tmp_path / "data")
    out = tmp_path / "out"
    os.environ["MEDLAB_CRASH_AT"] = f"batch:{KILLED_AT[name]}"
    try:
        result = run_script(f"{name}.py", "--data-dir", data, *TINY[name].split(), "--out", out)
    finally:
        del os.environ["MEDLAB_CRASH_AT"]
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    runs = sorted(out.glob("*-summary")) if name == "main_segmentation" else sorted(out.iterdir())
    return data, runs[0]


def state(folder):
    """Every file under `folder` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def outcome(module, argv, capsys):
    """(exit code, stderr) of `module.main(argv)` run in this process."""
    capsys.readouterr()
    code, printed = 0, io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            module.main(argv)
        except SystemExit as stop:
            code = stop.code
    outcome.printed = printed.getvalue()
    return code, capsys.readouterr().err.strip()


def assert_resume_refuses_every_change(module, data, run, capsys):
    """Each change of the data, made and undone in turn: --resume is one line, exit 2, and the
    run's folders are left as they were."""
    pristine, before = data.with_name("pristine"), state(run.parent)
    shutil.copytree(data, pristine)
    failures = []
    files = data_files(data)
    for change, make in CHANGES.items():
        make(files)
        code, err = outcome(module, ["--resume", str(run)], capsys)
        said = all(word in err for word in SAYS[change]) and "not what the run" in err
        if code != 2 or "\n" in err or not said or state(run.parent) != before:
            failures.append(f"{change}: exit {code}, {err[:300]!r}")
        shutil.rmtree(data)
        shutil.copytree(pristine, data)
    assert not failures, "\n".join(failures)


# With the data as it was, the same runs resume to the end: test_classifier_crash.py for the
# classifiers, the test below for segmentation.
@pytest.mark.parametrize("name", ["cam_vgg16", "transfer_vgg16"])
def test_a_classifier_resume_refuses_data_changed_in_any_way(name, tmp_path, capsys):
    data, run = killed_run(name, tmp_path)
    assert_resume_refuses_every_change(importlib.import_module(name), data, run, capsys)


def model_commands(module):
    """The commands of `module` that take a saved model (an argument named `model`)."""
    found = []
    for command in commands(module)[1:]:
        with pytest.MonkeyPatch.context() as patch:
            parsers = parsers_of(module, command, patch)
        if any(action.dest == "model" for parser in parsers for action in parser._actions):
            found.append(command[0])
    return found


def test_segmentation_resume_folds_and_held_out_refuse_what_changed(tmp_path, capsys):
    import main_segmentation as seg

    data, summary = killed_run("main_segmentation", tmp_path)
    assert_resume_refuses_every_change(seg, data, summary, capsys)
    (experiment,) = summary.parent.glob("*-4a")
    image = sorted((data / "Image").glob("*.png"))[0]
    commands_with_models = model_commands(seg)
    assert {"predict", "evaluate"} <= set(commands_with_models)
    arguments = {"predict": [experiment, image, "--out", tmp_path / "p"]}
    for command in commands_with_models:
        argv = [command, *map(str, arguments.get(command, [experiment, "--data-dir", data]))]
        code, err = outcome(seg, argv, capsys)
        assert code == 2 and "fold2 has no finished model" in err and "\n" not in err, argv
    assert outcome(seg, ["--resume", str(summary)], capsys)[0] == 0
    held_out = ["evaluate", str(experiment), "--data-dir", str(data), "--held-out"]
    held_out += ["--out", str(tmp_path / "evaluations")]
    assert outcome(seg, held_out, capsys)[0] == 0  # finished, data as validated: scored
    one_fold = [*held_out[:1], str(experiment / "fold1" / "model.keras"), *held_out[2:]]
    assert outcome(seg, one_fold, capsys)[0] == 0
    assert "--held-out scores 5 of the 10 pairs" in outcome.printed
    alter(data_files(data))
    code, err = outcome(seg, held_out, capsys)
    assert code == 2 and "not those the run" in err and "Image/" in err, err
