r"""Benchmark (not a test): the Task 4 numbers of docs/real-data.md on a real chest X-ray folder.

Runs the two commands of docs/real-data.md's chest X-ray tables, as a user would type them:
  1. the lab's experiments at 256 px with Adam 1e-3 for --epochs (the rows: 4a for 60
     epochs, and all eight for 20: 4d's base 32 makes each of its epochs ~5x a 4a epoch), and
  2. the recipe `split-tuned` (the earlier `best`) with its own settings,
then prints one table: validation Dice and HD95 per image (final model), and training time.

    python bench/real_data_segmentation.py --data-dir data/X_ray \
        [--lab 4a] [--epochs 60]
    # all eight: --lab 4a,4b,4c-bce,4c-dice,4d-bce,4d-dice,4e-bce,4e-dice --epochs 20

`segmentation_rows` is the part `bench/real_data.py` calls for its Task 4 rows.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_EXPERIMENTS = "4a,4b,4c-bce,4c-dice,4d-bce,4d-dice,4e-bce,4e-dice"


def segmentation_commands(data_dir, out, epochs, lab=LAB_EXPERIMENTS):
    """The documented commands: the lab's experiments `lab` for `epochs` epochs, then the
    recipe `split-tuned`."""
    common = [
        sys.executable,
        str(ROOT / "main_segmentation.py"),
        "--data-dir",
        str(data_dir),
        "--size",
        "256",
        "--out",
        str(out),
    ]
    return [
        common + ["--experiments", lab, "--epochs", str(epochs), "--lr", "1e-3"],
        common + ["--experiments", "split-tuned"],
    ]


def segmentation_rows(data_dir, out, epochs=60, lab="4a"):
    """Run the commands and return one row per experiment from the summaries they write."""
    rows = []
    for command in segmentation_commands(data_dir, out, epochs, lab):
        print("$", " ".join(command[1:]), flush=True)
        before = set(Path(out).glob("*-summary")) if Path(out).exists() else set()
        subprocess.run(command, check=True, cwd=ROOT)
        (summary,) = set(Path(out).glob("*-summary")) - before
        rows += summary_rows(summary)
    return rows


def summary_rows(summary_dir):
    """The table's columns from one invocation's summary.csv (and a postprocessed recipe's raw
    Dice)."""
    with open(summary_dir / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = []
    for row in rows:
        metrics = json.loads((summary_dir / row["folder"] / "metrics.json").read_text())
        raw = metrics.get("without_postprocess", {}).get("val_dice")
        table.append(
            {
                "task": "4",
                "experiment": row["experiment"],
                "epochs": int(row["epochs"]),
                "val_dice": float(row["val_dice"]),
                "val_hd95": float(row["val_hd95"]),
                "dice_without_postprocess": "" if raw is None else f"{raw:.3f}",
                "train_seconds": float(row["train_seconds"]),
                "collapsed_to": metrics.get("collapsed_to") or "",
            }
        )
    return table


def print_table(rows):
    print(
        "| experiment | epochs | Dice | HD95 px | Dice without postprocess | train s | collapsed |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['experiment']} | {r['epochs']} | {r['val_dice']:.3f} | {r['val_hd95']:.1f} | "
            f"{r['dice_without_postprocess']} | {r['train_seconds']:.0f} | {r['collapsed_to']} |"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", required=True, help="folder with Image/ and Mask/ (chest X-rays)"
    )
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the lab's experiments")
    parser.add_argument(
        "--lab", default="4a", help=f"the lab's experiments to run (all: {LAB_EXPERIMENTS})"
    )
    parser.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="real-seg-"))
    print_table(segmentation_rows(args.data_dir, out, args.epochs, args.lab))
    print(f"runs: {out}")


if __name__ == "__main__":
    main()
