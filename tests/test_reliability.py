"""What users see when things go wrong (docs/errors.md): models read their sidecars whichever
script saved them, outputs never overwrite each other, non-finite pixels are refused, and misuse
ends in one `error:` line with exit code 2 and no half-made folder."""

import re

import cv2
import keras
import numpy as np
import pytest

import cam_vgg16
import transfer_vgg16 as tv
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
    tv.save_models(run_dir, kept, backbone, p, ["Mel", "Nevi"], 0)
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
    bare = tmp_path / "bare.keras"  # the same model without its sidecar: fed [0, 1] pixels
    bare.write_bytes(model.read_bytes())
    cam_vgg16.main(["explain", str(bare), str(image), "--out", str(tmp_path / "bare")])
    assert re.search(r"\(p=([\d.]+)\)", capsys.readouterr().out).group(1) != predicted[1]
    one_line_error(
        capsys,
        lambda: cam_vgg16.main(["explain", str(model), str(image), "--scale", "1"]),
        r"--scale 1.0 conflicts with input_scale 255.0 recorded in .*transfer_vgg16.json",
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
    one_line_error(capsys, lambda: ms.main(["--experiments", ""]), "names no experiment")


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
    with pytest.raises(UserError, match=r"loss became nan in epoch 2, .*lower --scratch-lr"):
        fit_resumable(model, data, data, 3, checkpoint, verbose=0)
    assert (tmp_path / "history_scratch.csv").read_text().count("\n") == 2  # header, epoch 1


def test_classifiers_too_large_for_the_machine_are_refused_up_front(tmp_path, capsys, monkeypatch):
    from medlab.app import checks
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
