"""Time to quality (not a test): validation Dice of one segmentation experiment against the
minutes it has trained, so that a user can pick a training budget for this machine.

    python bench/segmentation_budget.py --data-dir DIR [--experiment best] [--every 5]
    python bench/segmentation_budget.py --data-dir DIR --groups prefix --holdout-group MCUCXR
    python bench/segmentation_budget.py --tiny          # smoke test: tiny synthetic data and model

Trains the experiment once, with its own parameters from main_segmentation.py (and those of the
flags below), and every --every epochs scores the model on the validation images exactly as a run
does (thresholded per-image Dice and HD95, with the experiment's postprocess and TTA). The clock
counts what a user waits for in a run (epochs with their validation pass and checkpoints), not these
extra scorings. Prints the curve as a table and writes summary.md, curve.csv and curve.png into
a new folder, with per_image.csv and overlays.png of the last row's scores (per_image.csv for
bench/compare_segmentation_scores.py, e.g. against a main_segmentation.py run of another
experiment on the same validation images).

Read it with the schedule in mind: with --lr-schedule cosine (as `best`), a row of the curve is a
point in the middle of a longer run, whose learning rate had not yet decayed; a run given that
shorter budget decays earlier and usually ends higher. Train with the budget you pick, and check.
"""

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main_segmentation  # noqa: E402
from medlab import quiet_tensorflow  # noqa: E402
from medlab.app.collapse import print_bold  # noqa: E402
from medlab.app.report import Report, markdown_table  # noqa: E402
from medlab.app.runs import (  # noqa: E402
    main_guard,
    mark_complete,
    new_run_dir,
    save_config,
    set_seed,
)
from medlab.app.segmentation.grouping import check_grouping  # noqa: E402
from medlab.app.segmentation.run import data_splits  # noqa: E402
from medlab.synthetic.common import banner  # noqa: E402

# --tiny: a smoke test of the whole script in seconds, on generated pairs.
TINY = {"size": 32, "depth": 2, "base": 4, "batch_size": 4, "epochs": 8}
TINY_PAIRS = 12
OVERRIDABLE = ("epochs", "size", "batch_size", "seed", "groups", "holdout_group", "val_fraction")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="folder with Image/ and Mask/ (default: the script's)")
    parser.add_argument("--experiment", default="best", choices=list(main_segmentation.EXPERIMENTS))
    parser.add_argument("--every", type=int, default=5, help="score every N epochs (default 5)")
    parser.add_argument("--epochs", type=int, help="train this long (default: the experiment's)")
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--val-fraction", type=float)
    parser.add_argument("--groups", help="as main_segmentation.py --groups")
    parser.add_argument("--holdout-group", help="as main_segmentation.py --holdout-group")
    parser.add_argument("--out", default="results/bench", help="folder for the new run folder")
    parser.add_argument("--tiny", action="store_true", help="tiny synthetic data and U-Net")
    return parser.parse_args(argv)


def budget_parameters(args):
    """The experiment's parameters as main_segmentation.py resolves them, then the flags given."""
    p = {**main_segmentation.PARAMETERS, **main_segmentation.EXPERIMENTS[args.experiment]}
    if args.tiny:
        p.update(TINY)
    p.update({k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k) is not None})
    if args.holdout_group and p["folds"]:
        p["folds"] = 0  # one held-out group: one model, one curve
    check_grouping(p)
    return p


def main(argv=None):
    args = parse_arguments(argv)
    p = budget_parameters(args)
    quiet_tensorflow()
    import unet  # TensorFlow starts here, once the command line is checked
    from medlab.app.segmentation.summary import write_per_image

    data_dir = args.data_dir or p["data_dir"]
    if args.tiny:
        from medlab.synthetic.xray import synthetic_xray_set

        data_dir = synthetic_xray_set(TINY_PAIRS, p["size"], p["seed"], tempfile.mkdtemp())
        banner([f"SYNTHETIC data: {TINY_PAIRS} generated pairs, a tiny U-Net (smoke test)"])
    every = unet.load_every_pair(data_dir, p["size"], "memory", p["memory_budget_gb"])
    train_idx, val_idx = data_splits(every["names"], {**p, "folds": 0})[0]
    data = unet.split_pairs(every, train_idx, val_idx)
    out = new_run_dir(args.out, f"budget-{args.experiment}")
    save_config(out, {**p, "data_dir": str(data_dir), "every": args.every})
    rows, (scores, shown) = train_with_curve(unet, p, data, out, max(1, args.every))
    val_names = [every["names"][i] for i in val_idx]
    write_per_image(out / "per_image.csv", val_names, scores)
    unet.plot_overlays(*shown, scores["dice"], out / "overlays.png", val_names)
    title = f"{args.experiment}, {len(train_idx)} training and {len(val_idx)} validation pairs"
    write_curve(rows, out, ("SYNTHETIC: " if args.tiny else "") + title)
    print("\n" + write_report(rows, out, title, args.tiny))
    mark_complete(out)
    print(f"summary.md, curve.csv, curve.png, per_image.csv and overlays.png: {out}")


def train_with_curve(unet, p, data, out, every):
    """Train as main_segmentation.py does, scoring every `every` epochs: the curve's rows."""
    set_seed(p["seed"])  # the weights, shuffling and augmentation of a run with this seed
    train_data, val_data = unet.experiment_datasets(p, data, p["batch_size"])
    steps = p["epochs"] * int(train_data.cardinality())
    model = unet.build_unet(
        (p["size"], p["size"], 1),
        p["base"],
        p["depth"],
        p["dropout"],
        p["batch_norm"],
        p["normalize"],
    )
    unet.compile_unet(model, p["loss"], unet.learning_rate(p["lr"], p["lr_schedule"], steps))
    curve = budget_curve(unet, val_data, p["epochs"], every, p["postprocess"], p["tta"])
    unet.train(model, train_data, val_data, p["epochs"], out, callbacks=[curve], verbose=0)
    shutil.rmtree(out / "backup", ignore_errors=True)  # only an interrupted run needs it
    return curve.rows, curve.final


def budget_curve(unet, val_data, epochs, every, postprocess, tta):
    """A Keras callback: the clocks of the epochs themselves, and scores every `every` epochs."""
    import keras

    class BudgetCurve(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows, self.wall, self.cpu = [], 0.0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.wall += time.perf_counter() - self.started[0]
            self.cpu += time.process_time() - self.started[1]
            if (epoch + 1) % every and epoch + 1 != epochs:
                return
            scores, shown = unet.evaluate_batches(
                self.model, val_data, postprocess=postprocess, tta=tta
            )
            self.final = (scores, shown)  # the last row's, for per_image.csv and the overlays
            self.rows.append(
                {
                    "epoch": epoch + 1,
                    "wall_minutes": round(self.wall / 60, 3),
                    "cpu_minutes": round(self.cpu / 60, 3),
                    "val_dice": round(float(scores["dice"].mean()), 4),
                    "val_dice_std": round(float(scores["dice"].std()), 4),
                    "val_hd95": round(float(scores["hd95"].mean()), 2),
                    "collapsed_to": unet.collapsed(scores) or "",
                }
            )
            print(", ".join(f"{k} {v}" for k, v in self.rows[-1].items()), flush=True)

    return BudgetCurve()


def write_curve(rows, out, title):
    import matplotlib.pyplot as plt

    with open(out / "curve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    minutes = [row["wall_minutes"] for row in rows]
    ax.errorbar(
        minutes,
        [row["val_dice"] for row in rows],
        yerr=[row["val_dice_std"] for row in rows],
        marker="o",
        capsize=3,
    )
    for row, minute in zip(rows, minutes):
        ax.annotate(str(row["epoch"]), (minute, row["val_dice"]), fontsize=7)
    ax.set_xlabel("training minutes (wall clock; labels: epochs)")
    ax.set_ylabel("validation Dice (mean +- sd over images)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


COLUMNS = {
    "epoch": "epoch",
    "wall_minutes": "wall min",
    "cpu_minutes": "process CPU min",
    "val_dice": "val Dice",
    "val_dice_std": "sd",
    "val_hd95": "HD95 px",
}


def write_report(rows, out, title, synthetic):
    """summary.md: the curve's table and figure, and how to read them; returns the table."""
    report = Report(out, f"Time to quality: {title}")
    if synthetic:
        report.bold("Synthetic data and a tiny U-Net: a smoke test, not a measurement.")
    report.text(
        "Validation Dice (thresholded, per image, the experiment's postprocess and TTA) after each "
        "row's training time. Wall minutes count what a run waits for (epochs, their validation "
        "pass, checkpoints); process CPU minutes add up the time of every core. With a cosine "
        "schedule a shorter run decays earlier and usually ends above the curve at its budget."
    )
    if rows[-1]["collapsed_to"]:
        warning = (
            f"The model has not learnt: at the end it predicts {rows[-1]['collapsed_to']} for "
            "every validation image; the curve says nothing about a budget."
        )
        print_bold(f"warning: {warning}")
        report.bold(warning)
    report.table(rows, list(COLUMNS), headers=list(COLUMNS.values()))
    report.figure(out / "curve.png", "validation Dice against training minutes")
    report.write()
    return markdown_table(rows, list(COLUMNS), headers=list(COLUMNS.values()))


if __name__ == "__main__":
    main_guard(main)()
