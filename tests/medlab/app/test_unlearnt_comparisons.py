"""A comparison with a run that has not learnt reports its numbers and no verdict, on every
surface that reports comparisons: segmentation's summary folder and console, and the classifiers'
transfer-vs-scratch comparison."""

import json

import numpy as np
import pytest

import main_segmentation
import transfer_vgg16 as tv
import unet
from medlab import plots
from medlab.app.classification import transfer_run
from medlab.app.segmentation.summary import write_summary

IMAGES, SIZE = 20, 32
# What each fabricated run predicts: the true lungs with this many rows lost, or nothing at all.
RUNS = {"4b": 6, "4c-dice": 1, "4d-dice": None}
TYPED = {"data_dir": "/lab/my-xrays", "epochs": 30, "seed": 3}


def true_masks():
    rng = np.random.default_rng(0)
    masks = np.zeros((IMAGES, SIZE, SIZE, 1), bool)
    for mask in masks:
        top, left = rng.integers(2, 8, 2)
        mask[top : top + 20, left : left + 16] = True
    return masks


def fabricated_run(folder, name, lost_rows, truth):
    """(metrics, scores, folder, parameters) as `SegmentationRun.finish` hands them over."""
    prediction = np.zeros_like(truth) if lost_rows is None else truth.copy()
    if lost_rows:
        prediction[:, : lost_rows + 8] = False
    scores = unet.similarity_scores(truth, prediction)
    scores["hd95"] = np.array([unet.hd95(t[..., 0], p[..., 0]) for t, p in zip(truth, prediction)])
    folder.mkdir()
    history = [
        {
            "epoch": e,
            "loss": 1 / (e + 1),
            "val_loss": 1 / (e + 1),
            "dice_coefficient": 0.5,
            "binary_accuracy": 0.9,
        }
        for e in range(3)
    ]
    plots.write_csv(folder / "history.csv", history, list(history[0]))
    collapsed_to = unet.collapsed(scores)
    metrics = {
        **unet.score_summary(scores),
        "best_checkpoint": {"val_dice": float(scores["dice"].mean())},
        "epochs": 30,
        "train_seconds": 1.0,
        "validation_images": IMAGES,
        "collapsed_to": collapsed_to,
        "collapsed": collapsed_to is not None,
    }
    parameters = {
        **main_segmentation.PARAMETERS,
        **main_segmentation.EXPERIMENTS[name],
        **TYPED,
        "lr": 7e-4,
    }
    names = [f"p{i}.png" for i in range(IMAGES)]
    return metrics, {**scores, "image": names}, folder, parameters


def reporting_surfaces(tmp_path, capsys):
    """{surface: its text} of a summary written for the fabricated runs with the lab's own
    comparisons: every text file of the summary folder, and the console."""
    truth = true_masks()
    runs = {name: fabricated_run(tmp_path / name, name, lost, truth) for name, lost in RUNS.items()}
    summary = tmp_path / "summary"
    summary.mkdir()
    table = ([{"parameter": "loss", **{n: r[3]["loss"] for n, r in runs.items()}}], ["parameter"])
    write_summary(summary, runs, table, main_segmentation.COMPARISONS, typed=TYPED)
    surfaces = {
        path.name: path.read_text()
        for path in summary.iterdir()
        if path.suffix in (".md", ".csv", ".json")
    }
    return {**surfaces, "console": capsys.readouterr().out}


def test_a_collapsed_run_gets_no_beats_verdict_on_any_surface(tmp_path, capsys):
    surfaces = reporting_surfaces(tmp_path, capsys)
    # The surfaces that report verdicts: the pair of two learnt runs gets one on each.
    reporting = {name for name, text in surfaces.items() if "4c-dice beats 4b by" in text}
    assert {"summary.md", "comparisons.csv", "summary.json", "console"} <= reporting, reporting
    for name in reporting:
        text = surfaces[name]
        assert "beats 4d-dice" not in text and "4d-dice beats" not in text, name
        assert "no verdict: 4d-dice has not learnt (collapsed to the empty mask)" in text
        # What to do: the run's own command (its data, not the default folder), lr lowered.
        assert (
            "python main_segmentation.py --data-dir /lab/my-xrays --epochs 30 --seed 3 "
            "--experiments 4d-dice --lr 0.00023" in text
        ), name
    rows = [json.loads(surfaces["summary.json"])["comparisons"]]
    (collapsed,) = [r for r in rows[0] if r["first"] == "4d-dice"]
    assert collapsed["metrics"]["dice"]["mean_first"] == 0.0  # the numbers are still reported
    assert collapsed["metrics"]["dice"]["difference"] < -0.5


def test_transfer_vs_scratch_gets_no_verdict_when_a_model_has_not_learnt():
    runs = [
        {
            "seed": 0,
            "val": np.arange(4),
            "scores": {"transfer": np.full(4, 0.9), "scratch": np.array([0.1, 0.9, 0.2, 0.8])},
        }
    ]
    params = {**tv.PARAMETERS, "preset": None}
    checks, advice = transfer_run.learning_checks(
        runs, np.array([0, 1, 0, 1]), ["Mel", "Nevi"], params, {}, tv.PRESETS
    )
    metrics = {
        "transfer": checks["transfer"],
        "scratch": checks["scratch"],
        "try_instead": advice,
        "difference": {"verdict": "training from scratch is more accurate: difference +0.5"},
    }
    transfer_run.withhold_verdict(metrics)
    line = metrics["difference"]["verdict"]
    assert line.startswith(
        "no verdict: transfer has not learnt (predicts Nevi for 4 of 4 validation images)"
    )
    assert "more accurate" not in line and advice in line
    metrics["transfer"]["not_learnt"] = False
    metrics["difference"]["verdict"] = "kept"
    transfer_run.withhold_verdict(metrics)
    assert metrics["difference"]["verdict"] == "kept"


@pytest.mark.parametrize("lost", [1, 6])
def test_fabricated_learnt_runs_are_not_collapsed(tmp_path, lost):
    metrics = fabricated_run(tmp_path / "run", "4b", lost, true_masks())[0]
    assert not metrics["collapsed"] and metrics["val_dice"] > 0.5


def test_the_comparison_benchmark_gives_no_verdict_on_a_collapsed_run(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "compare_segmentation_scores.py"
    spec = importlib.util.spec_from_file_location("compare_segmentation_scores", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sides = {}
    for side, dice, collapsed in (("good", 0.9, False), ("empty", 0.0, True)):
        folder = tmp_path / side
        folder.mkdir()
        rows = "".join(f"p{i}.png,{dice + 0.01 * i},{5 + i}\n" for i in range(8))
        (folder / "per_image.csv").write_text("image,dice,hd95\n" + rows)
        (folder / "metrics.json").write_text(json.dumps({"collapsed": collapsed}))
        sides[side] = folder
    bench.main(["--first", str(sides["good"]), "--second", str(sides["empty"])])
    out = capsys.readouterr().out
    assert "no verdict" in out and "collapsed to the empty mask" in out and "beats" not in out
    (sides["empty"] / "metrics.json").write_text(json.dumps({"collapsed": False}))
    bench.main(["--first", str(sides["good"]), "--second", str(sides["empty"])])
    assert "first beats second" in capsys.readouterr().out  # both learnt: a verdict


def test_each_comparison_names_every_parameter_its_runs_differ_in(tmp_path, capsys):
    summary = reporting_surfaces(tmp_path, capsys)["summary.md"]
    # 4d-dice vs 4c-dice is asked about capacity; the fabricated runs differ in base only.
    section = summary.split("### 4d-dice vs 4c-dice")[1].split("###")[0]
    assert "The two runs differ in: base 32 vs 8." in section
    section = summary.split("### 4c-dice vs 4b")[1].split("###")[0]
    assert "The two runs differ in: dropout 0.2 vs 0.0." in section
