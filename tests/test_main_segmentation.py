"""main_segmentation.py as users run it: outputs, synthetic demo, resume, predict and bad input."""

import json
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import ROOT, experiment_in, images_in, run_script, tensorboard_events, xray_folder

import main_segmentation
import unet
from medlab.app.segmentation import evaluate_command, setup
from medlab.errors import UserError
from medlab.synthetic.xray import chest_xray

TINY = "--epochs 1 --size 32 --depth 2 --base 2 --batch-size 4".split()
RUN_FILES = (
    "config.json",
    "history.csv",
    "curves.png",
    "overlays.png",
    "model.keras",
    "best.keras",
    "metrics.json",
    "per_image.csv",
)


def folders(out, suffix):
    return sorted(p for p in out.iterdir() if p.name.endswith(suffix))


def test_experiments_write_every_output_predict_and_resume(tmp_path, script):
    data = xray_folder(tmp_path)
    result = script(
        "main_segmentation.py",
        "--data-dir",
        data,
        "--experiments",
        "4a,4e-dice",
        "--compare",
        "4a:4e-dice",
        *TINY,
        # best's additions, saved with the model: evaluate and predict below must repeat them
        *("--normalize", "image", "--augment-intensity", "--tta"),
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (summary,) = folders(tmp_path / "out", "-summary")
    stamp = summary.name.removesuffix("-summary")
    for name in ("4a", "4e-dice"):
        run = tmp_path / "out" / f"{stamp}-{name}"
        assert all((run / f).is_file() for f in RUN_FILES), sorted(p.name for p in run.iterdir())
        metrics = json.loads((run / "metrics.json").read_text())
        for key in (
            "val_dice",
            "val_iou",
            "val_hd95",
            "val_precision",
            "val_recall",
            "epochs",
            "train_seconds",
        ):
            assert key in metrics
        assert 0.0 <= metrics["val_dice"] <= 1.0 and metrics["epochs"] == 1
        validation = run / "tensorboard" / "validation"
        assert tensorboard_events(validation)["epoch_loss"] == [0]
        assert {"_hparams_/session_start_info", "final/val_dice"} <= set(
            tensorboard_events(validation)
        )
        images = images_in(validation)
        assert images["overlays: truth (green) vs prediction (red)"][-1][0] == 1
        assert images["overlays of the final model"] == [(1, 1)]
        config = json.loads((run / "config.json").read_text())
        assert config["parameters"]["size"] == 32 and "tensorflow" in config["versions"]
    experiment = experiment_in(tmp_path / "out")  # the HParams table opens on the answer
    assert [m.name.tag for m in experiment.metric_infos][0] == "final/val_dice"
    shown = {h.name for h in experiment.hparam_infos if h.differs} - {"task", "model", "run"}
    assert len(shown) == 2 and shown <= {"loss", "dropout", "base", "batch_norm", "augment"}
    config = json.loads((tmp_path / "out" / f"{stamp}-4e-dice" / "config.json").read_text())[
        "parameters"
    ]
    assert (config["loss"], config["batch_norm"], config["augment"], config["dropout"]) == (
        "dice",
        True,
        True,
        0.2,
    )
    assert config["base"] == 2  # the flag wins over the experiment's base 16
    assert {"summary.md", "summary.csv", "dice.png"} <= {p.name for p in summary.iterdir()}
    assert "4e-dice" in (summary / "summary.md").read_text()
    assert str(summary / "summary.md") in result.stdout
    (comparison,) = json.loads((summary / "summary.json").read_text())["comparisons"]
    assert (comparison["first"], comparison["second"], comparison["metrics"]["dice"]["images"]) == (
        "4a",
        "4e-dice",
        2,
    )
    assert (summary / comparison["figure"]).is_file() and comparison["verdict"] in (
        summary / "summary.md"
    ).read_text()
    assert len(per_image(summary / "comparisons.csv")) == 2  # Dice and HD95

    # evaluate: the saved model scored on its own validation images gives the run's own scores,
    # its masks made as the run made them (standardised input inside the model, mirrored TTA).
    run = tmp_path / "out" / f"{stamp}-4a"
    assert json.loads((run / "model.json").read_text())["tta"] is True
    assert "standardize" in [layer.name for layer in unet.load_unet(run / "model.keras").layers]
    validation = per_image(run / "per_image.csv")
    for row in validation:
        for folder in ("Image", "Mask"):
            (tmp_path / "val" / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / "val" / folder / row["image"]).write_bytes(
                (data / folder / row["image"]).read_bytes()
            )
    result = script(
        "main_segmentation.py",
        "evaluate",
        run / "model.keras",
        "--data-dir",
        tmp_path / "val",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "evaluated",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (evaluated,) = folders(tmp_path / "evaluated", "-evaluate")
    assert {"metrics.json", "per_image.csv", "overlays.png", "config.json"} <= {
        p.name for p in evaluated.iterdir()
    }
    again = per_image(evaluated / "per_image.csv")
    assert [r["image"] for r in again] == [r["image"] for r in validation]
    for metric in ("dice", "iou", "hd95", "precision", "recall"):
        np.testing.assert_allclose(
            [float(r[metric]) for r in again], [float(r[metric]) for r in validation]
        )
    assert "training images" not in result.stdout  # a folder of unseen images: no warning
    evaluated_metrics = json.loads((evaluated / "metrics.json").read_text())
    assert evaluated_metrics["training_images"] == 0 and evaluated_metrics["tta"] is True

    # evaluate on the training folder itself: a warning, and the unseen images scored apart.
    result = script(
        "main_segmentation.py", "evaluate", run / "model.keras", "--data-dir", data,
        "--out", tmp_path / "evaluated-all",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (evaluated,) = folders(tmp_path / "evaluated-all", "-evaluate")
    metrics = json.loads((evaluated / "metrics.json").read_text())
    n_train = metrics["images"] - len(validation)
    assert f"warning: {n_train} of the {metrics['images']} pairs" in result.stdout
    assert metrics["training_images"] == n_train and metrics["unseen"]["images"] == len(validation)
    own = json.loads((run / "metrics.json").read_text())
    assert metrics["unseen"]["dice"] == pytest.approx(own["val_dice"], abs=1e-6)
    assert f"on the {len(validation)} pairs it did not train on: Dice" in result.stdout

    predict_out = tmp_path / "predictions"
    model = tmp_path / "out" / f"{stamp}-4a" / "model.keras"
    big = np.uint8(chest_xray(np.random.default_rng(5), 80)[0] * 255)
    cv2.imwrite(str(tmp_path / "new.jpg"), big)
    result = script(
        "main_segmentation.py",
        "predict",
        model,
        tmp_path / "new.jpg",
        "--out",
        predict_out,
        "--postprocess",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (prediction,) = folders(predict_out, "-predict")
    mask = cv2.imread(str(prediction / "new_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (80, 80) and set(np.unique(mask)) <= {0, 255}
    assert (prediction / "new_overlay.png").is_file()

    # Resume: as if 4e-dice had been interrupted, 4a is kept as it is and only 4e-dice is redone.
    finished = (tmp_path / "out" / f"{stamp}-4a" / "metrics.json").read_text()
    (tmp_path / "out" / f"{stamp}-4e-dice" / "metrics.json").unlink()
    result = script("main_segmentation.py", "--resume", summary)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4a: already complete" in result.stdout and "=== experiment 4e-dice" in result.stdout
    assert (tmp_path / "out" / f"{stamp}-4a" / "metrics.json").read_text() == finished
    assert (tmp_path / "out" / f"{stamp}-4e-dice" / "metrics.json").is_file()
    assert len(folders(tmp_path / "out", "-summary")) == 1


def per_image(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folds_score_every_image_once_compare_pooled_scores_and_resume_per_fold(tmp_path, script):
    data = xray_folder(tmp_path, count=5)
    out = tmp_path / "out"
    result = script(
        "main_segmentation.py",
        "--data-dir",
        data,
        "--experiments",
        "4a,4b",
        "--folds",
        "2",
        *TINY,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (summary,) = folders(out, "-summary")
    stamp = summary.name.removesuffix("-summary")
    names = sorted(p.name for p in (data / "Image").iterdir())
    fold_images = {}
    for name in ("4a", "4b"):
        run = out / f"{stamp}-{name}"
        assert (
            sorted(r["image"] for r in per_image(run / "per_image.csv")) == names
        )  # each exactly once
        fold_images[name] = [
            [r["image"] for r in per_image(run / f"fold{k}" / "per_image.csv")] for k in (1, 2)
        ]
        assert sorted(fold_images[name][0] + fold_images[name][1]) == names
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["folds"], metrics["validation_images"]) == (
            2,
            5,
        ) and "folds_dice_std" in metrics
    assert fold_images["4a"] == fold_images["4b"]  # the same folds for every experiment
    (comparison,) = json.loads((summary / "summary.json").read_text())["comparisons"]
    assert (comparison["first"], comparison["second"], comparison["metrics"]["dice"]["images"]) == (
        "4a",
        "4b",
        5,
    )
    assert "folds_dice_mean" in (summary / "summary.md").read_text()

    # Resume: as if 4b had been interrupted in its second fold.
    for path in (
        out / f"{stamp}-4b" / "metrics.json",
        out / f"{stamp}-4b" / "fold2" / "metrics.json",
    ):
        path.unlink()
    result = script("main_segmentation.py", "--resume", summary)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4a: already complete" in result.stdout and "4b-fold1: already complete" in result.stdout
    assert "=== experiment 4b-fold2" in result.stdout and "4b-fold1 ->" not in result.stdout
    assert sorted(r["image"] for r in per_image(out / f"{stamp}-4b" / "per_image.csv")) == names


def test_demo_generates_synthetic_data_and_says_so_and_keeps_an_edited_value(tmp_path):
    """As a new user does it: `"epochs": 1` edited in PARAMETERS wins over the demo's 16 epochs,
    `loss` edited is overridden by the experiment's, and the table says both."""
    source = (ROOT / "main_segmentation.py").read_text()
    edited = source.replace('"epochs": 150,', '"epochs": 1,').replace(
        '"loss": "bce",', '"loss": "dice",'
    )
    assert edited.count('"epochs": 1,') == 1 and '"loss": "dice",\n    "augment"' in edited
    (tmp_path / "main_segmentation.py").write_text(edited)
    result = run_script(
        tmp_path / "main_segmentation.py",
        "--experiments",
        "4a",
        *[flag for flag in TINY if flag not in ("--epochs", "1")],
        "--out",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SYNTHETIC DATA" in result.stdout
    table = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.splitlines()[1:40]
        if line.split() and line.split()[0] in ("epochs", "loss", "lr", "base")
    }
    assert table == {
        "epochs": "1 (edited)",
        "loss": "bce (experiment; edited dice overridden)",
        "lr": "0.0004 (demo)",
        "base": "2 (flag)",
    }, result.stdout
    (run,) = folders(tmp_path / "out", "-4a")
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    (summary,) = folders(tmp_path / "out", "-summary")
    assert "| epochs | 1 (edited) |" in (summary / "summary.md").read_text()
    marker = json.loads((tmp_path / "data" / "synthetic" / "X_ray" / "SYNTHETIC.json").read_text())
    assert marker["generator"] == "chest_xray"
    assert (
        len(list((tmp_path / "data" / "synthetic" / "X_ray" / "Mask").iterdir())) == marker["count"]
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--experiments", "4z"], "unknown experiment 4z"),
        (["--size", "100"], "divisible by 2\\*\\*depth"),
        (["--epochs", "-3"], "--epochs -3 is out of range"),
        (["--dropout", "1.0"], "--dropout 1.0 is out of range"),
        (["--loss", "focal"], "--loss focal is unknown"),
        (["--cache", "ram"], "--cache ram is unknown; choose one of auto, memory, disk, none"),
        (["--memory-budget-gb", "0"], "--memory-budget-gb 0.0 is out of range"),
        (
            ["--strategy", "tpu"],
            "--strategy tpu is unknown; choose one of auto, default, mirrored, multiworker",
        ),
        (["--mixed-precision", "fp8"], "--mixed-precision fp8 is unknown"),
        (["--folds", "1"], "--folds 1 is not cross-validation"),
        (["--folds", "4"], "--folds 4 needs at least 4 image/mask pairs, but there are 3"),
        (["--compare", "4a-4b"], "--compare 4a-4b is not two experiments"),
        (["--compare", "4a:4z"], "--compare 4a:4z names unknown experiment 4z"),
        (
            ["--lr-schedule", "step"],
            "--lr-schedule step is unknown; choose one of constant, cosine",
        ),
    ],
)
def test_nonsense_parameters_are_refused_before_any_work(tmp_path, flags, message):
    data = xray_folder(tmp_path, count=3)
    with pytest.raises(UserError, match=message):
        main_segmentation.train(["--data-dir", str(data), "--out", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_bad_data_is_refused_before_anything_is_written(tmp_path):
    data = xray_folder(tmp_path, count=4)
    (data / "Mask" / "p0.png").rename(data / "Mask" / "lonely.png")
    out = tmp_path / "out"
    for data_dir, message in ((tmp_path / "nowhere", "missing folder"), (data, "do not pair up")):
        with pytest.raises(UserError, match=message):
            main_segmentation.train(["--data-dir", str(data_dir), "--out", str(out)])
    assert not out.exists()


def test_corrupt_image_gives_one_line_exit_2_and_writes_nothing(tmp_path, script):
    data = xray_folder(tmp_path, count=4)
    (data / "Image" / "p1.png").write_bytes(b"not really a png")
    out = tmp_path / "out"
    result = script("main_segmentation.py", "--data-dir", data, *TINY, "--out", out)
    assert (
        result.returncode == 2
        and "cannot read image" in result.stderr
        and "p1.png" in result.stderr
    )
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_evaluate_refuses_a_missing_model(tmp_path):
    data = xray_folder(tmp_path, count=2)
    with pytest.raises(UserError, match="model file .*nowhere.keras does not exist"):
        evaluate_command(
            [
                str(tmp_path / "nowhere.keras"),
                "--data-dir",
                str(data),
                "--out",
                str(tmp_path / "out"),
            ],
            main_segmentation.PARAMETERS,
        )
    assert not (tmp_path / "out").exists()


def test_a_model_that_marks_everything_is_called_collapsed_to_the_whole_image(
    tmp_path, monkeypatch, capsys
):
    """A U-Net whose output bias drowns every input (and an lr too small to undo it) marks every
    pixel as lung: console, summary and metrics.json say so, and not that it predicts no lung."""
    build = unet.build_unet

    def saturated(*args, **kwargs):
        model = build(*args, **kwargs)
        kernel, bias = model.get_layer("mask").get_weights()
        model.get_layer("mask").set_weights([kernel * 0, bias + 20.0])
        return model

    monkeypatch.setattr(unet, "build_unet", saturated)
    data = xray_folder(tmp_path, count=10)
    main_segmentation.train(
        [
            "--data-dir",
            str(data),
            "--experiments",
            "best",
            *TINY,
            "--lr",
            "1e-12",
            "--postprocess",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert (
        "**warning: best marks (almost) the whole image as lung in all 2 validation images" in out
    )
    (summary,) = folders(tmp_path / "out", "-summary")
    assert (
        "**Collapsed: best marks (almost) the whole image" in (summary / "summary.md").read_text()
    )
    (run,) = folders(tmp_path / "out", "-best")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["collapsed"] is True and metrics["collapsed_to"] == "whole image"
    assert metrics["without_postprocess"]["val_dice"] == pytest.approx(metrics["val_dice"])


# Runs main_segmentation.py in this process and reports whether TensorFlow was imported.
TENSORFLOW_IMPORTED = """
import runpy, sys
sys.argv = ["main_segmentation.py", *sys.argv[1:]]
try:
    runpy.run_path("main_segmentation.py", run_name="__main__")
except SystemExit as stop:
    print("exit", stop.code)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize(
    "argv, output",
    [(["--help"], "usage: main_segmentation.py"), (["--data-dir", "nowhere"], "exit 2")],
)
def test_help_and_a_wrong_data_folder_answer_without_starting_tensorflow(argv, output):
    result = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_IMPORTED, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert output in result.stdout and "tensorflow imported: False" in result.stdout, result


def test_following_the_collapse_advice_makes_the_run_learn(tmp_path, capsys):
    """A BCE U-Net stopped after 2 epochs has only learnt the class balance (no lung anywhere):
    the advice printed for it, the run's own command with the cause fixed, is run as printed and
    the model then learns."""
    data = xray_folder(tmp_path, count=16)
    tiny = "--size 32 --depth 2 --base 4 --batch-size 4 --lr 0.001".split()
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--experiments", "4a", *tiny, "--epochs", "2"]
    main_segmentation.train([*argv, "--out", str(out)])
    (run,) = folders(out, "-4a")
    assert json.loads((run / "metrics.json").read_text())["collapsed_to"] == "empty mask"
    console = capsys.readouterr().out
    (advice,) = re.findall(r"Rerun it: `python main_segmentation.py ([^`]*)`", console)
    (summary,) = folders(out, "-summary")
    assert f"`python main_segmentation.py {advice}`" in (summary / "summary.md").read_text()
    # The advice keeps every flag of the run (its data above all) and changes only the cause.
    words = shlex.split(advice)
    assert dict(zip(words[::2], words[1::2])) == {
        **dict(zip(argv[::2], argv[1::2])),
        "--epochs": "20",
        "--out": str(out),
    }
    main_segmentation.train(shlex.split(advice))
    (run, rerun) = folders(out, "-4a")
    metrics = json.loads((rerun / "metrics.json").read_text())
    assert metrics["collapsed"] is False and metrics["val_dice"] > 0.25 and metrics["epochs"] == 20


def test_an_experiments_own_demo_setting_applies_to_it_alone_and_a_flag_still_wins(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # no data/X_ray here: the synthetic demo
    monkeypatch.setattr(setup, "synthetic_xrays", lambda count, seed: xray_folder(tmp_path, 3))
    script = segmentation_script()
    plan = setup.new_plan("4c-dice,4d-dice", {}, script)
    assert plan["4d-dice"].cell("lr") == "0.00015 (demo)"
    assert plan["4c-dice"].cell("lr") == "0.0004 (demo)"
    assert "demo settings of 4d-dice alone: lr=0.00015" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        setup.parse_arguments(["--help"], script)
    assert "synthetic demo: 0.0004, 4d-dice: 0.00015)" in " ".join(capsys.readouterr().out.split())
    typed = setup.new_plan("4d-dice", {"lr": 1e-3}, script)
    assert typed["4d-dice"].cell("lr") == "0.001 (flag)"
    real = setup.new_plan("4d-dice", {"data_dir": str(tmp_path / "X_ray")}, script)
    assert real["4d-dice"].cell("lr") == "0.0001 (lab)"


def segmentation_script():
    """What main_segmentation.py hands to `segmentation.start`, as `start` packs it."""
    m = main_segmentation
    return setup.Script(
        parameters=m.PARAMETERS,
        experiments=m.EXPERIMENTS,
        demo=m.SYNTHETIC_DEMO,
        comparisons=m.COMPARISONS,
        default_experiments=m.DEFAULT_EXPERIMENTS,
        commands=m.COMMANDS,
        doc=m.__doc__,
        demo_experiments=m.SYNTHETIC_DEMO_EXPERIMENTS,
    )
