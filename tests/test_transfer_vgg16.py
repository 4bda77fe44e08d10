"""transfer_vgg16.py as users run it: a tiny end-to-end run, the cache on a re-run, predict,
the offline ImageNet error and one-line errors (exit code 2) for bad input."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import ROOT, experiment_in, tensorboard_events

import transfer_vgg16 as tv
from medlab.classification import transfer
from medlab.classification.metrics import positive_label
from medlab.synthetic.skin_bone import synthetic_class_set

TINY = "--weights none --epochs 2 --image-size 32 --scratch-size 32 --bootstrap 200".split()
TINY += ["--batch-size", "4"]
OUTPUTS = [
    "config.json",
    "metrics.json",
    "summary.md",
    "curves.png",
    "roc.png",
    "confusion.png",
    "history_transfer.csv",
    "history_scratch.csv",
    "predictions.csv",
    "transfer_vgg16.keras",
    "transfer_vgg16.json",
    "transfer_head.keras",
    "scratch_vgg16.keras",
    "scratch_vgg16.json",
]


@pytest.fixture(scope="module")
def tiny_bone(tmp_path_factory):
    return synthetic_class_set(
        "bone", n_train=12, n_val=8, size=64, root=tmp_path_factory.mktemp("data")
    )


def run_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_tiny_run_writes_everything_then_reuses_features_and_predicts(
    script, tiny_bone, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    common = [
        "--data-dir",
        tiny_bone,
        "--out",
        tmp_path / "out",
        "--cache-dir",
        tmp_path / "cache",
        *TINY,
    ]
    first = script("transfer_vgg16.py", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "extracting VGG16 features of 20 images" in first.stdout
    [run] = run_dirs(tmp_path / "out")
    for name in OUTPUTS:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    for method in ("transfer", "scratch", "difference"):
        for metric in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"):
            assert len(metrics[method][f"val_{metric}_ci"]) == 2
    assert 0 <= metrics["transfer"]["val_accuracy"] <= 1
    for model in ("head", "scratch"):  # one TensorBoard run per model, with its pooled scores
        validation = tensorboard_events(run / "tensorboard" / model / "validation")
        assert validation["epoch_loss"] == [0, 1] and "final/val_auc" in validation
    experiment = experiment_in(tmp_path / "out")
    assert [m.name.tag for m in experiment.metric_infos][0] == "final/val_auc"
    assert {"model", "run"} <= {h.name for h in experiment.hparam_infos if h.differs}
    assert metrics["evaluation"]["positive_class"] == "AFF" and metrics["scored_images"] == 8
    assert "verdict" in metrics["difference"]
    summary = (run / "summary.md").read_text()
    assert all(f"({png})" in summary for png in ("curves.png", "roc.png", "confusion.png"))
    assert "--weights none" in summary
    history = (run / "history_transfer.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "accuracy"] and len(history) == 3  # 2 epochs
    config = json.loads((run / "config.json").read_text())["parameters"]
    assert (
        config["epochs"] == 2 and config["lr"] == 1e-5
    )  # real data: the lab's defaults, not the demo's

    # The rest runs in-process, which spares two TensorFlow start-ups.
    tv.main([str(a) for a in common] + ["--folds", "2"])
    out = capsys.readouterr().out
    assert "skipped extraction" in out and "extracting VGG16" not in out
    newest = run_dirs(tmp_path / "out")[-1]
    assert newest != run  # every run gets its own folder
    folds = json.loads((newest / "metrics.json").read_text())
    assert folds["evaluation"]["feature_cache_hit"] and folds["scored_images"] == 20
    assert [r["name"] for r in folds["runs"]] == ["fold1", "fold2"]

    image = next(tiny_bone.glob("validation/NFF/*.png"))
    tv.main(["predict", str(run / "transfer_vgg16.keras"), str(image)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith(f"{image}: ") and ("AFF" in line or "NFF" in line) and "probability" in line
    )
    [p_one] = [
        row.split(",")[4]
        for row in (run / "predictions.csv").read_text().splitlines()
        if row.split(",")[2] == str(image)
    ]
    shown = float(line.rsplit(" ", 1)[1].rstrip(")"))
    assert shown == pytest.approx(float(p_one) if "NFF" in line else 1 - float(p_one), abs=2e-3)


def test_imagenet_without_internet_stops_with_one_clear_line(
    script, tiny_bone, tmp_path, monkeypatch
):
    # An empty Keras cache and a proxy nobody listens on: the download fails at once, as offline.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    result = script(
        "transfer_vgg16.py",
        "--data-dir",
        tiny_bone,
        "--weights",
        "imagenet",
        "--out",
        tmp_path / "out",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: cannot get the ImageNet VGG16 weights")
    assert (
        str(tmp_path / "keras" / "models" / transfer.IMAGENET_FILE) in line
        and "--weights PATH" in line
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # no silent fallback, no half-made run


def expect_user_error(argv, capsys, *fragments):
    with pytest.raises(SystemExit) as stop:
        tv.main([str(a) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def copy_set(source, target):
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("_*", "SYNTHETIC.json"))
    return target


def test_bad_input_ends_with_one_line_and_exit_code_2(tiny_bone, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be generated inside the repository
    out = ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", *TINY]
    expect_user_error(["--data-dir", tmp_path / "nowhere", *out], capsys, "does not exist")
    expect_user_error(["--dataset", "lung", *out], capsys, "--dataset lung is unknown")
    expect_user_error(
        ["--data-dir", tiny_bone, "--preprocess", "caffe", *out], capsys, "--preprocess"
    )

    one_class = copy_set(tiny_bone, tmp_path / "one")
    for split in ("train", "validation"):
        for image in (one_class / split / "NFF").iterdir():
            image.unlink()
        (one_class / split / "NFF").rmdir()
    expect_user_error(["--data-dir", one_class, *out], capsys, "exactly two class folders")

    empty = copy_set(tiny_bone, tmp_path / "empty")
    for image in (empty / "train" / "AFF").iterdir():
        image.unlink()
    expect_user_error(["--data-dir", empty, *out], capsys, "has no images")

    corrupt = copy_set(tiny_bone, tmp_path / "corrupt")
    next((corrupt / "validation" / "AFF").iterdir()).write_bytes(b"not a png")
    expect_user_error(["--data-dir", corrupt, *out], capsys, "corrupt")

    expect_user_error(
        [
            "--data-dir",
            tiny_bone,
            *out[: -len(TINY)],
            *TINY[2:],
            "--weights",
            tmp_path / "missing.h5",
        ],
        capsys,
        "missing.h5 does not exist",
    )
    wrong = tmp_path / "wrong.weights.h5"
    from medlab.classification.vgg import build_vgg16_style

    build_vgg16_style((32, 32, 3)).save_weights(wrong)
    expect_user_error(
        ["--data-dir", tiny_bone, *out[: -len(TINY)], *TINY[2:], "--weights", wrong],
        capsys,
        "does not fit VGG16",
    )
    expect_user_error(["predict", tmp_path / "none.keras", "x.png"], capsys, "does not exist")
    assert not (tmp_path / "out").exists()


def test_help_a_missing_folder_and_a_missing_model_answer_without_starting_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "import transfer_vgg16\n"
        "for argv in (['--help'], ['--data-dir', sys.argv[1]], ['predict', sys.argv[1], 'x']):\n"
        "    try:\n"
        "        transfer_vgg16.main(argv)\n"
        "    except SystemExit as stop:\n"
        "        print('exit', stop.code)\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.strip().splitlines()
    assert "--weights WEIGHTS" in result.stdout and "exit 0" in lines, result.stdout[-2000:]
    assert lines[-3:] == ["exit 2", "exit 2", "tensorflow loaded: False"], result.stdout[-2000:]
    folder_error, model_error = result.stderr.strip().splitlines()
    assert (
        folder_error.startswith("error: data folder") and "nowhere does not exist" in folder_error
    )
    assert model_error.startswith("error: model file") and "does not exist" in model_error


def test_flat_folder_is_split_with_the_seed(tmp_path, capsys):
    flat = tmp_path / "flat"
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (flat / name).mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(
                str(flat / name / f"{i}.jpg"), rng.integers(0, 255, (40, 40), dtype=np.uint8)
            )
    from medlab.classification.data import load_class_split

    split = load_class_split(flat, 0.2, seed=0)
    assert split.layout == "flat" and len(split.val_paths) == 2
    assert positive_label(split.class_names, "auto") == 1  # no Mel/AFF: class 1 is positive
    assert positive_label(["AFF", "NFF"], "auto") == 0


def test_scratch_model_cosine_schedule_spans_its_own_epochs_and_batches(tmp_path):
    import keras

    from medlab.distribute import single_device

    p = {**tv.PARAMETERS, "scratch_size": 32, "scratch_base": 2, "scratch_channels": 3, "epochs": 5}
    p.update(scratch_epochs=2, scratch_batch_size=4, scratch_lr=1e-3, scratch_lr_schedule="cosine")
    images = np.random.default_rng(0).random((10, 32, 32, 3), dtype=np.float32)
    labels = np.array([0, 1] * 5)
    train, val = np.arange(6), np.arange(6, 10)
    model, scores, _ = tv.train_scratch(
        images, labels, train, val, p, 0, tmp_path / "history.csv", single_device()
    )
    config = model.optimizer.get_config()["learning_rate"]
    schedule = keras.optimizers.schedules.deserialize(config)
    assert schedule.decay_steps == 2 * 2  # its 2 epochs of ceil(6 / 4) batches, not --epochs 5
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)  # decayed to 0
    assert scores.shape == (4,)
