"""What users see when things go wrong (docs/errors.md): models read their sidecars whichever
script saved them, outputs never overwrite each other, non-finite pixels are refused, and misuse
ends in one `error:` line with exit code 2 and no half-made folder."""

import json
import re

import cv2
import keras
import numpy as np
import pytest

import cam_vgg16
import transfer_vgg16 as tv
from medlab.app.classification import transfer_run as transfer_app
from medlab.classification import transfer


def one_line_error(capsys, run, message):
    """`run()` exits with 2 and one `error:` line on stderr containing `message`."""
    with pytest.raises(SystemExit) as stop:
        run()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert re.search(message, err), err
    return err


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    """The models `transfer_vgg16.py` saves, with their sidecars, on a tiny stand-in backbone."""
    run_dir = tmp_path_factory.mktemp("transfer-run")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="block5_conv3")
    features = conv(inputs)
    conv.set_weights([np.abs(conv.get_weights()[0]) / 100, np.ones(4, np.float32)])
    backbone = keras.Model(inputs, keras.layers.MaxPooling2D(8)(features))
    head = transfer.build_head(backbone.output_shape[1:], 4, 0.0)
    p = {**tv.PARAMETERS, "image_size": 32, "scratch_size": 32, "scratch_base": 1}
    kept = {"head": head, "scratch": tv.build_scratch(p)}
    transfer_app.save_models(run_dir, kept, backbone, p, ["Mel", "Nevi"], 0)
    return run_dir


def test_explain_reads_a_transfer_models_scale_and_refuses_a_conflicting_one(
    transfer_run, tmp_path, capsys
):
    image = tmp_path / "lesion.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))
    model = transfer_run / "transfer_vgg16.keras"
    tv.main(["predict", str(model), str(image)])
    predicted = re.search(r": (\w+) \(probability ([\d.]+)\)", capsys.readouterr().out).groups()
    cam_vgg16.main(["explain", str(model), str(image), "--out", str(tmp_path / "maps")])
    explained = re.search(r"predicted (\w+) \(p=([\d.]+)\)", capsys.readouterr().out).groups()
    assert explained == predicted and predicted[0] in ("Mel", "Nevi")
    bare = tmp_path / "bare.keras"  # the same model without its sidecar: refused, not guessed
    bare.write_bytes(model.read_bytes())
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", str(bare), str(image), "--out", str(tmp_path / "b")]),
        r"bare.json are missing, and this command needs their input_scale; .* or pass --scale",
    )
    maps = ["--out", str(tmp_path / "bare-maps")]
    cam_vgg16.main(["explain", str(bare), str(image), "--scale", "255", *maps])
    assert re.search(r"\(p=([\d.]+)\)", capsys.readouterr().out).group(1) == predicted[1]
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", str(model), str(image), "--scale", "1"]),
        r"--scale 1.0 conflicts with input_scale 255.0 recorded in .*transfer_vgg16.json",
    )
    copied = tmp_path / "copied.keras"  # a sidecar that belongs to another model
    copied.write_bytes(model.read_bytes())
    from medlab.app.sidecars import DIGEST, write_sidecar

    settings = json.loads((transfer_run / "transfer_vgg16.json").read_text())
    settings.pop(DIGEST)
    write_sidecar(copied, **{**settings, "input_size": 64})  # written as the project writes
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", str(copied), str(image)]),
        r"copied.json say input_size 64, but model .*copied.keras takes 32",
    )
    (transfer_run / "scratch_vgg16.json").write_text("{}")
    one_line_error(
        capsys,
        lambda: tv.main(["predict", str(transfer_run / "scratch_vgg16.keras"), str(image)]),
        r"scratch_vgg16.json lack the key 'channels'",
    )


def test_a_hand_edited_runs_json_of_a_wrong_type_is_one_line(tmp_path, capsys):
    import json

    import main_segmentation as ms

    summary = tmp_path / "20260101-000000-summary"
    summary.mkdir()
    plan = {"4a": {**ms.PARAMETERS, "epochs": "ten"}}
    (summary / "runs.json").write_text(json.dumps(plan))
    one_line_error(
        capsys,
        lambda: ms.main(["--resume", str(summary)]),
        r"runs.json is damaged: 'epochs' is 'ten', not a int",
    )
    one_line_error(capsys, lambda: ms.main(["--experiments", ""]), "--experiments: '' is blank")


def write_image(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def two_class_folder(root, count=3, size=40):
    """root/{train,validation}/{A,B}/ with `count` grey images each."""
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for name in ("A", "B"):
            for i in range(count):
                write_image(root / split / name / f"{i}.png", rng.integers(0, 255, (size, size)))
    return root


NAN_IMAGE = np.full((40, 40), 0.5, np.float32)
NAN_IMAGE[5, 5] = np.nan


def test_non_finite_pixels_are_refused_in_training_and_prediction(transfer_run, tmp_path, capsys):
    import main_segmentation as ms
    from medlab.synthetic.xray import write_chest_xrays

    message = r"\.tif has 1 pixel\(s\) that are not numbers \(NaN or infinite\)"
    folder = two_class_folder(tmp_path / "set")
    write_image(folder / "train" / "A" / "nan.tif", NAN_IMAGE)
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--data-dir", str(folder), "--out", str(out)]
    tiny_transfer = ["--weights", "none", "--image-size", "32", "--scratch-size", "32"]
    for run in (
        lambda: cam_vgg16.main([*common, "--size", "32"]),
        lambda: tv.main([*common, "--cache-dir", str(cache), *tiny_transfer]),
    ):
        one_line_error(capsys, run, message)
    write_chest_xrays(tmp_path / "X_ray", 6, 32, seed=1)
    (tmp_path / "X_ray" / "Image" / "cxr_0001.png").unlink()
    write_image(tmp_path / "X_ray" / "Image" / "cxr_0001.tif", NAN_IMAGE)
    one_line_error(
        capsys, lambda: ms.main(["--data-dir", str(tmp_path / "X_ray"), "--out", str(out)]), message
    )
    nan = folder / "train" / "A" / "nan.tif"
    for run in (
        lambda: ms.main(["predict", str(transfer_run / "scratch_vgg16.keras"), str(nan)]),
        lambda: cam_vgg16.main(["explain", str(transfer_run / "transfer_vgg16.keras"), str(nan)]),
        lambda: tv.main(["predict", str(transfer_run / "transfer_vgg16.keras"), str(nan)]),
    ):
        one_line_error(capsys, run, message)
    assert not out.exists() and not list(tmp_path.rglob("*-explain"))


def test_float_images_far_above_one_are_warned_about(transfer_run, tmp_path, capsys):
    bright = write_image(tmp_path / "bright.tif", np.full((40, 40), 2550.0, np.float32))
    tv.main(["predict", str(transfer_run / "transfer_vgg16.keras"), str(bright)])
    out = capsys.readouterr().out
    assert "warning: float image" in out and "from 2550 to 2550, outside [0, 1]" in out
    assert out.count("warning:") == 1


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(tmp_path, capsys):
    import os
    import signal
    import time

    from medlab.app import runs

    def training():
        runs.resume_with("python cam_vgg16.py --resume RUN", tmp_path)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # interrupted long before this ends

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        runs.main_guard(training)()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 143 and "\n" not in err, err
    assert err.startswith("interrupted (SIGTERM)") and "python cam_vgg16.py --resume RUN" in err
    assert "--resume RUN" in (tmp_path / "INCOMPLETE.txt").read_text()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_nan_loss_stops_at_its_epoch_naming_the_flag(tmp_path):
    """--lr 1e308: the epoch whose loss is NaN is not committed; the one before it stays."""
    import tensorflow as tf

    from medlab.app.runs import UserError
    from medlab.checkpoints import EpochCheckpoint, fit_resumable

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(1e308), "binary_crossentropy")
    pairs = (np.ones((8, 4), np.float32), np.ones((8, 1), np.float32))
    data = tf.data.Dataset.from_tensor_slices(pairs).batch(8)  # one step: epoch 1 is finite
    checkpoint = EpochCheckpoint(tmp_path, monitor=None, name="scratch", lr_flag="--scratch-lr")
    with pytest.raises(
        UserError,
        match=r"loss became nan in epoch 2, .*start a new run with a lower --scratch-lr "
        r".*--resume would diverge again",
    ):
        fit_resumable(model, data, data, 3, checkpoint, verbose=0)
    assert (tmp_path / "history_scratch.csv").read_text().count("\n") == 2  # header, epoch 1


def test_classifiers_too_large_for_the_machine_are_refused_up_front(tmp_path, capsys, monkeypatch):
    from medlab import checks
    from medlab.classification import vgg

    model = vgg.build_vgg16_style(
        (64, 64, 3),
        base=2,
        batch_norm=True,
        pooling="max",
        centre=True,
        colour_constancy=True,
        dropout=0.0,
    )
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    values, weights = vgg.layer_outputs_and_weights(64, 3, 2, True, "max")
    assert values + 3 * 64 + 2 == outputs  # the three dense layers and the prediction
    assert abs(weights - model.count_params()) < 0.05 * model.count_params()  # biases, BN
    monkeypatch.setattr(checks, "machine_memory_gb", lambda: 16.0)
    folder, out = two_class_folder(tmp_path / "set"), tmp_path / "out"
    common = ["--data-dir", str(folder), "--out", str(out)]
    one_line_error(
        capsys,
        lambda: cam_vgg16.main([*common, "--size", "4096"]),
        r"training at --size 4096 with --batch-size 8 needs about .* GB, more than this "
        r"machine's 16 GB; lower --batch-size, --size or --base",
    )
    one_line_error(
        capsys,
        lambda: tv.main([*common, "--scratch-size", "4096", "--weights", "none"]),
        r"needs about .* GB, more than this machine's 16 GB; lower .*--scratch-base or "
        r"--dense-units",
    )
    assert not out.exists()


def test_outputs_of_same_stem_images_never_overwrite_each_other(transfer_run, tmp_path, capsys):
    import main_segmentation as ms
    import unet

    rng = np.random.default_rng(2)
    images = [write_image(tmp_path / d / "x.png", rng.integers(0, 255, (40, 40))) for d in "ab"]
    long_name = write_image(tmp_path / ("n" * 246 + ".png"), rng.integers(0, 255, (40, 40)))
    model = tmp_path / "unet.keras"
    unet.build_unet((32, 32, 1), base=2, depth=2).save(model)
    out = tmp_path / "masks"
    ms.main(["predict", str(model), *map(str, images), str(long_name), "--out", str(out)])
    (folder,) = out.iterdir()
    written = {path.name for path in folder.iterdir()}
    assert {"a_x_mask.png", "b_x_mask.png", "a_x_overlay.png", "outputs.csv"} <= written
    assert any(name.startswith("nnnn") and name.endswith("_overlay.png") for name in written)
    maps = tmp_path / "maps"
    argv = ["explain", str(transfer_run / "transfer_vgg16.keras"), *map(str, images)]
    cam_vgg16.main([*argv, str(long_name), "--out", str(maps)])
    assert {"a_x_cam.png", "b_x_cam.png", "outputs.csv"} <= {p.name for p in maps.iterdir()}
    assert len(list(maps.glob("nnnn*_cam.png"))) == 1
    assert f"{images[1]},b_x_cam.png" in (maps / "outputs.csv").read_text(encoding="utf-8")


def test_transfer_names_broken_and_unreadable_images(tmp_path, capsys, monkeypatch):
    folder = two_class_folder(tmp_path / "set")
    broken = folder / "train" / "A" / "9.png"
    broken.symlink_to(tmp_path / "gone.png")
    argv = ["--data-dir", str(folder), "--out", str(tmp_path / "out"), "--weights", "none"]
    argv += ["--image-size", "32", "--scratch-size", "32", "--cache-dir", str(tmp_path / "c")]
    one_line_error(capsys, lambda: tv.main(argv), r"9.png is a broken link")
    broken.unlink()
    real_open = open

    def denied(path, *args, **kwargs):  # tests may run as root, for whom chmod 000 does nothing
        if str(path).endswith("1.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(transfer, "open", denied, raising=False)
    one_line_error(capsys, lambda: tv.main(argv), r"cannot read .*1.png: permission denied")
    assert not (tmp_path / "out").exists()


def test_unreadable_data_folders_are_one_line_in_every_script(tmp_path, capsys, monkeypatch):
    import pathlib

    import main_segmentation as ms
    from medlab.synthetic.xray import write_chest_xrays

    folder = two_class_folder(tmp_path / "set")
    write_chest_xrays(tmp_path / "X_ray", 6, 32, seed=1)
    locked = {folder / "train" / "B", tmp_path / "X_ray" / "Mask"}
    real_iterdir = pathlib.Path.iterdir

    def iterdir(self):
        if self in locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    for run in (
        lambda: cam_vgg16.main(["--data-dir", str(folder)]),
        lambda: tv.main(["--data-dir", str(folder), "--cache-dir", str(tmp_path / "c")]),
        lambda: ms.main(["--data-dir", str(tmp_path / "X_ray")]),
    ):
        one_line_error(capsys, run, r"cannot read folder .*(B|Mask): permission denied")


def test_a_closed_pipe_and_an_ascii_terminal_never_raise(tmp_path, monkeypatch, script):
    import errno
    import io
    import os
    import sys

    from medlab.app.runs import main_guard

    class ClosedPipe(io.StringIO):  # what `| head -1` leaves once head has exited
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def run():
        print("first line")
        print("second line")
        (tmp_path / "finished").write_text("yes")
        return "done"

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main_guard(run)() == "done" and (tmp_path / "finished").is_file()
    monkeypatch.undo()
    os.environ["PYTHONIOENCODING"] = "ascii"
    try:
        result = script("transfer_vgg16.py", "predict", tmp_path / "modèle.keras", "x.png")
    finally:
        del os.environ["PYTHONIOENCODING"]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: model file") and "mod\\xe8le.keras" in result.stderr


def test_explain_out_model_files_and_batch_sizes_are_checked(
    transfer_run, tmp_path, capsys, monkeypatch
):
    import main_segmentation as ms
    from medlab import checks
    from medlab.app import runs

    image = write_image(tmp_path / "x.png", np.zeros((40, 40), np.uint8))
    model = str(transfer_run / "transfer_vgg16.keras")
    (tmp_path / "afile").write_text("a file")
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", model, str(image), "--out", str(tmp_path / "afile/s")]),
        r"--out .*afile/s is under .*afile, which is a file; pass a folder",
    )
    monkeypatch.setattr(checks.os, "access", lambda *args: False)  # root may write anywhere
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", model, str(image), "--out", str(tmp_path / "ro")]),
        r"--out .*ro: .* is not writable \(permission denied\)",
    )
    monkeypatch.undo()

    def unreadable(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runs, "open", unreadable, raising=False)
    one_line_error(
        capsys,
        lambda: tv.main(["predict", model, str(image)]),
        r"cannot read model .*transfer_vgg16.keras: Permission denied; make it readable",
    )
    monkeypatch.undo()
    one_line_error(
        capsys,
        lambda: ms.main(["evaluate", model, "--data-dir", str(tmp_path), "--batch-size", "-1"]),
        r"--batch-size -1 is out of range: at least 1",
    )


def test_a_full_disk_is_called_full_and_names_the_folder_flag(tmp_path, monkeypatch):
    import errno
    import shutil

    from medlab import images
    from medlab.app.runs import UserError, resource_message

    def full(path, **arrays):
        open(path, "wb").write(b"half")  # noqa: SIM115
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer.np, "savez", full)
    cache = tmp_path / "cache" / "k.npz"
    cache.parent.mkdir()
    with pytest.raises(UserError, match=r"the disk is full: the feature cache .* pass --cache-dir"):
        transfer.write_cache(cache, np.zeros((2, 3)), ["a", "b"])
    assert list(cache.parent.iterdir()) == []  # the partial cache is gone
    h5_error = RuntimeError("Unable to synchronously create dataset (out of memory? errno = 28)")
    h5_error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert resource_message(h5_error, "--batch-size").startswith("the disk is full")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(images.shutil, "disk_usage", lambda path: usage._replace(free=10))
    assert images.why_unwritable(tmp_path).startswith("the disk is full")


def test_a_huge_image_is_shown_from_a_reduced_decoding(monkeypatch, tmp_path):
    from medlab import images

    path = write_image(tmp_path / "big.jpg", np.full((640, 480, 3), 200, np.uint8))
    monkeypatch.setattr(images, "DISPLAY_MAX_SIDE", 150)
    assert images.decode_for_display(path).shape == (160, 120, 3)  # a quarter of each side
    monkeypatch.setattr(images, "DISPLAY_MAX_SIDE", 2048)
    assert images.decode_for_display(path).shape == (640, 480, 3)
