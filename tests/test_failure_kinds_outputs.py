"""Kind 6 of the failures: outputs that land where they do harm. Every folder flag a training
command writes to (found from its parser: `--out`, `--cache-dir`, ...) is pointed inside the data
folder it reads, and inside one of its image folders: each is one `error:` line, with nothing
written into the data. `explain` never overwrites an earlier invocation's outputs and never writes
its overlays among images."""

import contextlib
import io

import cv2
import numpy as np
import pytest
from helpers import xray_folder
from test_failure_kinds_blank import parsers_of
from test_failure_kinds_readers import tiny_classifier

import cam_vgg16
import main_segmentation
import transfer_vgg16
from medlab.app import runs


def two_class_folder(root, count=3, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for name in ("A", "B"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                cv2.imwrite(
                    str(root / split / name / f"{i}.png"), rng.integers(0, 255, (size, size))
                )
    return root


# Each script's training data, an image folder inside it, and flags that keep it offline.
DATA = {
    main_segmentation: lambda root: (xray_folder(root), "Image", []),
    cam_vgg16: lambda root: (two_class_folder(root / "skin"), "train/A", []),
    transfer_vgg16: lambda root: (
        two_class_folder(root / "skin"),
        "train/A",
        ["--weights", "none"],
    ),
}


class Wrote(Exception):
    """A run folder was made: the command got past every check of where it writes."""


def output_flags(module, monkeypatch):
    """The folder flags of a script's training command that it writes to."""
    parsers = parsers_of(module, [], monkeypatch)
    return sorted(
        action.option_strings[0]
        for parser in parsers
        for action in parser._actions
        if action.dest == "out" or action.dest.endswith("cache_dir")
    )


def cases():
    for module in DATA:
        for where in ("data folder", "image folder"):
            yield module, where


@pytest.mark.parametrize("module, where", list(cases()), ids=lambda v: getattr(v, "__name__", v))
def test_no_training_writes_inside_its_data(module, where, tmp_path, monkeypatch, capsys):
    flags = output_flags(module, monkeypatch)
    assert "--out" in flags
    data, images, offline = DATA[module](tmp_path)
    before = sorted(data.rglob("*"))
    monkeypatch.setattr(runs, "mark_incomplete", lambda folder: (_ for _ in ()).throw(Wrote()))
    for flag in flags:
        inside = data / "results" if where == "data folder" else data / images / "results"
        argv = ["--data-dir", str(data), flag, str(inside), "--epochs", "1", *offline]
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
            module.main(argv)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
        assert flag in err and "inside" in err, err
        assert sorted(data.rglob("*")) == before


def test_explain_never_overwrites_nor_writes_among_images(tmp_path, capsys):
    model = tiny_classifier(tmp_path / "m.keras")
    images = two_class_folder(tmp_path / "skin") / "train" / "A"
    image = images / "0.png"
    out = tmp_path / "maps"
    explain = ["explain", str(model), str(image), "--scale", "1", "--out"]
    with contextlib.redirect_stdout(io.StringIO()):
        cam_vgg16.main([*explain, str(out)])
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    for target in (out, images, tmp_path / "skin" / "train"):
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
            cam_vgg16.main([*explain, str(target)])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.startswith("error: --out"), err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert sorted(p.name for p in images.iterdir()) == ["0.png", "1.png", "2.png"]
