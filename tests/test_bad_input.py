"""Bad input, misuse and faults: one `error:` line naming the file or flag and the fix, exit code 2,
and no output folder left behind; or the warning stated for data that loads but looks wrong."""

import errno
import json
import os

import cv2
import numpy as np
import pytest

import cam_vgg16
import main_segmentation as ms
import transfer_vgg16 as tv
import unet
from medlab.app.classification import transfer_run
from medlab.app.runs import main_guard
from medlab.app.segmentation import predict_command
from medlab.app.segmentation.setup import unet_activations, unet_weights
from medlab.app.segmentation.summary import collapse_message
from medlab.checks import check_pairs
from medlab.errors import UserError
from medlab.synthetic.xray import write_chest_xrays


def segmentation(argv, tmp_path=None):
    out = ["--out", str(tmp_path / "out")] if tmp_path else []
    ms.train([*map(str, argv), *out])


@pytest.fixture
def xrays(tmp_path):
    write_chest_xrays(tmp_path / "X_ray", 6, 32, seed=1)
    return tmp_path / "X_ray"


def refused(argv, tmp_path, message):
    with pytest.raises(UserError, match=message):
        segmentation(argv, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "--lr nan is not a number"),
        (["--lr", "inf"], "--lr inf is not a number"),
        (["--dropout", "nan"], "--dropout nan is not a number"),
        (["--val-fraction", "nan"], "--val-fraction nan is not a number"),
        (["--memory-budget-gb", "nan"], "--memory-budget-gb nan is not a number"),
        (["--seed", "-1"], "--seed -1 is out of range"),
        (["--seed", str(2**32)], "--seed 4294967296 is out of range"),
        (["--experiments", ","], "names no experiment"),
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_nonsense_numbers_and_lists_are_refused(xrays, tmp_path, flags, message):
    refused(["--data-dir", xrays, *flags], tmp_path, message)


def test_argparse_errors_are_one_line_in_every_script(capsys):
    for run in (
        lambda: ms.main(["--epochs", "x"]),
        lambda: cam_vgg16.main(["--lr", "nan"]),
        lambda: tv.main(["--lr", "inf"]),
    ):
        with pytest.raises(SystemExit) as stop:
            run()
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err


def test_broken_unreadable_tiny_and_transparent_files_are_named(xrays, tmp_path, monkeypatch):
    victim = xrays / "Image" / "cxr_0002.png"
    victim.unlink()
    victim.symlink_to(tmp_path / "gone.png")
    refused(["--data-dir", xrays], tmp_path, "cxr_0002.png is a broken link")
    victim.unlink()
    cv2.imwrite(str(victim), np.zeros((1, 1), np.uint8))
    refused(["--data-dir", xrays], tmp_path, "cxr_0002.png is only 1x1 pixels")
    cv2.imwrite(str(victim), np.full((32, 32, 4), 90, np.uint8) * np.array([1, 1, 1, 0], np.uint8))
    refused(["--data-dir", xrays], tmp_path, "cxr_0002.png is fully transparent")
    write_chest_xrays(tmp_path / "fresh", 6, 32, seed=1)
    real_fromfile = np.fromfile

    def denied(path, *args, **kwargs):  # tests may run as root, for whom chmod 000 changes nothing
        if path.endswith("cxr_0003.png"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_fromfile(path, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", denied)
    for cache in ("memory", "none"):
        refused(
            ["--data-dir", tmp_path / "fresh", "--cache", cache],
            tmp_path,
            "cxr_0003.png: permission denied",
        )


def test_duplicate_stems_are_listed(xrays, tmp_path):
    cv2.imwrite(str(xrays / "Image" / "cxr_0001.jpg"), np.full((32, 32), 128, np.uint8))
    refused(
        ["--data-dir", xrays],
        tmp_path,
        "cxr_0001.jpg and cxr_0001.png|cxr_0001.png and cxr_0001.jpg",
    )


def test_data_that_looks_wrong_is_warned_about(xrays):
    images, masks = sorted((xrays / "Image").iterdir()), sorted((xrays / "Mask").iterdir())
    cv2.imwrite(str(masks[0]), np.zeros((40, 40), np.uint8))
    cv2.imwrite(str(images[1]), np.full((32, 32), 77, np.uint8))
    warnings = []
    assert check_pairs(images, masks, warn=warnings.append) is False
    assert any("1 mask(s) differ in size" in w and "40x40 vs 32x32" in w for w in warnings), (
        warnings
    )
    assert any("1 image(s) have almost no contrast (cxr_0001.png)" in w for w in warnings), warnings
    for mask in masks:
        cv2.imwrite(str(mask), np.zeros((32, 32), np.uint8))
    warnings.clear()
    assert check_pairs(images, masks, warn=warnings.append) is True
    assert any("all 6 masks are empty" in w for w in warnings), warnings
    # A BCE run is not blamed on Dice loss; with every mask empty, recall 0 is no collapse.
    bce, dice = (
        collapse_message("4a", "empty mask", 6, {"loss": loss, "epochs": 50, "lr": 3e-4})
        for loss in ("bce", "dice")
    )
    assert "--lr 0.0001" in bce and "Dice loss" not in bce and "Dice loss" in dice
    nothing_found = {"recall": np.zeros(6), "coverage": np.zeros(6)}
    assert unet.collapsed(nothing_found) == "empty mask"
    assert unet.collapsed(nothing_found, masks_empty=True) is None
    assert (
        unet.collapsed({"recall": np.zeros(6), "coverage": np.ones(6)}, masks_empty=True)
        == "whole image"
    )


def test_resume_refuses_flags_and_damaged_plans(tmp_path):
    summary = tmp_path / "20260101-000000-summary"
    summary.mkdir()
    (summary / "runs.json").write_text('{"4a": {"loss": ')
    with pytest.raises(UserError, match="cannot be applied"):
        segmentation(["--resume", summary, "--lr", "0.1"])
    with pytest.raises(UserError, match="runs.json is damaged"):
        segmentation(["--resume", summary])
    (summary / "runs.json").write_text(json.dumps({"4a": {"loss": "bce"}}))
    with pytest.raises(UserError, match="runs.json is damaged"):
        segmentation(["--resume", summary])


def test_damaged_checkpoint_is_one_line(tmp_path):
    from medlab.checkpoints import read_state

    (tmp_path / "state.json").write_text(
        json.dumps({"epoch": 3, "weights": "epoch-0003.weights.h5", "best": None, "rows": []})
    )
    with pytest.raises(UserError, match="checkpoint in .* is damaged .*epoch-0003.weights.h5"):
        read_state(tmp_path)


def test_predict_and_explain_check_everything_before_making_a_folder(xrays, tmp_path):
    import keras

    classifier = tmp_path / "classifier.keras"
    keras.Sequential(
        [keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    ).save(classifier)
    image, out = xrays / "Image" / "cxr_0000.png", tmp_path / "out"
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    for argv, message in (
        ([classifier, image], "is not a segmentation model"),
        ([classifier, tmp_path / "missing.png"], "missing.png does not exist"),
        ([classifier, xrays], "is a folder, not an image"),
        ([tmp_path / "bad.keras", image], "damaged or not a .keras file"),
    ):
        with pytest.raises(UserError, match=message):
            predict_command([*map(str, argv), "--out", str(out)], ms.PARAMETERS)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(UserError, match="--out .*taken is a file"):
        cam_vgg16.explain([str(classifier), str(image), "--out", str(tmp_path / "taken")])
    with pytest.raises(UserError, match="missing.png does not exist"):
        cam_vgg16.explain([str(classifier), str(tmp_path / "missing.png")])
    assert not out.exists()


def test_transfer_checks_cache_dir_weights_folder_and_class_counts(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="--cache-dir .* is not a writable folder"):
        tv.train(
            ["--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "file" / "cache")]
        )
    with pytest.raises(UserError, match="--weights .* is a folder"):
        transfer_run.check_weights(str(tmp_path))
    from medlab.classification.data import stratified_split

    with pytest.raises(UserError, match="class dogs has only 1 image.*lower --val-fraction"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5, 0, ["cats", "dogs"])


@pytest.mark.parametrize(
    "error, fragment",
    [
        (MemoryError(), "out of memory"),
        (
            type("ResourceExhaustedError", (Exception,), {})("OOM when allocating tensor"),
            "out of memory",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    ],
)
def test_out_of_memory_and_disk_full_are_one_line(capsys, error, fragment):
    def failing():
        raise error

    with pytest.raises(SystemExit) as stop:
        main_guard(failing, lower="--batch-size")()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith(f"error: {fragment}") and "\n" not in err, err
    assert ("--batch-size" in err) == (fragment == "out of memory") and "INCOMPLETE.txt" in err


def test_unrelated_errors_still_raise():
    with pytest.raises(ZeroDivisionError):
        main_guard(lambda: 1 / 0)()


def test_new_run_folders_are_incomplete_until_marked(tmp_path):
    from medlab.app.runs import mark_complete, new_run_dir

    run = new_run_dir(tmp_path, "x")
    assert (run / "INCOMPLETE.txt").is_file()
    mark_complete(run)
    assert os.listdir(run) == []


def test_memory_estimate_counts_the_built_model_and_refuses_what_cannot_fit(xrays, tmp_path):
    model = unet.build_unet((64, 64, 1), base=4, depth=3, dropout=0.2, batch_norm=True)
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    assert unet_activations(64, 4, 3, True, 0.2) == outputs
    assert (
        abs(unet_weights(4, 3) - model.count_params()) < 0.05 * model.count_params()
    )  # biases, batch norm
    refused(
        ["--data-dir", xrays, "--size", "4096"],
        tmp_path,
        "needs about .* GB, over --memory-budget-gb 4",
    )
    refused(
        ["--data-dir", xrays, "--base", "100000"], tmp_path, "lower --batch-size, --size or --base"
    )
