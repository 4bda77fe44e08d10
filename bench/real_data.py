"""Real-data results of docs/real-data.md, rerun from a data folder and printed as one table.

    python bench/real_data.py --skin data/Skin              # Tasks 1-2 and 3
    python bench/real_data.py --skin data/Skin --tasks 3    # Task 3 only
    python bench/real_data.py --skin data/Skin --list       # the commands, not run

Every row is one command a user can type (printed before it runs): the script writes its run
folder as usual and the row is read from that folder's metrics.json. Runs go to --out
(default results/real-data). Not a test: it takes about an hour on a 2-core CPU.

A task is one function in TASKS that takes the parsed arguments and returns its rows (dicts;
the table shows the union of their keys). Segmentation rows (Task 4, dev X-rays) go in a
`task4_rows` beside the others, with their own data-folder flag.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Backbone input for Tasks 1-2: 128 px makes feature extraction with a random VGG16 about 3x
# cheaper than the lab's 224 on a CPU; the scratch model is 128 px either way.
TRANSFER_ARGS = ["--weights", "none", "--image-size", "128", "--epochs", "30"]
CLASSIFIER_COLUMNS = (
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auc",
    "val_sensitivity",
    "val_specificity",
)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skin", help="two-class Skin folder (e.g. data/Skin): Tasks 1-2 and 3")
    parser.add_argument(
        "--tasks", nargs="+", default=None, help=f"tasks to run (default: all): {', '.join(TASKS)}"
    )
    parser.add_argument("--out", default="results/real-data", help="root of the run folders")
    parser.add_argument(
        "--list", action="store_true", help="print the commands without running them"
    )
    args = parser.parse_args(argv)
    unknown = [t for t in args.tasks or [] if t not in TASKS]
    if unknown:
        parser.exit(
            2, f"error: --tasks {' '.join(unknown)} is unknown; choose from {', '.join(TASKS)}\n"
        )
    return args


def fail(message):
    """The project's contract for a user mistake: one error line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_script(script, args, out, dry_run):
    """Run `script` like a user; return its new run folder (None when only listing) and minutes."""
    command = ["python", script, *map(str, args), "--out", str(out)]
    print("$ " + " ".join(shlex.quote(word) for word in command), flush=True)
    if dry_run:
        return None, None
    before = set(Path(out).glob("*")) if Path(out).is_dir() else set()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, check=False)
    if result.returncode != 0:
        fail(f"{script} ended with exit code {result.returncode} (its output is above)")
    new = sorted(set(Path(out).glob("*")) - before)
    return new[-1], (time.perf_counter() - start) / 60


def classifier_row(task, model, command_args, metrics, minutes):
    row = {"task": task, "model": model, "command": " ".join(map(str, command_args))}
    row.update({key.removeprefix("val_"): metrics.get(key) for key in CLASSIFIER_COLUMNS})
    row["learnt"] = "no" if metrics.get("not_learnt") else "yes"
    row["minutes"] = minutes
    return row


def task12_rows(args):
    """Tasks 1-2 on a random backbone (--weights none): NOT transfer learning, a pipeline check."""
    rows = []
    for preset in ("recommended", "lab"):
        command = ["--data-dir", args.skin, *TRANSFER_ARGS, "--preset", preset]
        run_dir, minutes = run_script(
            "transfer_vgg16.py", command, Path(args.out) / "transfer", args.list
        )
        metrics = json.loads((run_dir / "metrics.json").read_text()) if run_dir else {}
        for model in ("transfer", "scratch"):
            name = {"transfer": "head on random VGG16", "scratch": f"scratch ({preset})"}[model]
            rows.append(classifier_row("1-2", name, command, metrics.get(model, {}), minutes))
    return rows


def task3_rows(args):
    """Task 3 with both presets; recommended in colour, the lab's as the handout (1 channel)."""
    rows = []
    for preset, extra in (("recommended", ["--channels", "3"]), ("lab", [])):
        command = ["--data-dir", args.skin, "--preset", preset, *extra]
        run_dir, minutes = run_script("cam_vgg16.py", command, Path(args.out) / "cam", args.list)
        metrics = json.loads((run_dir / "metrics.json").read_text()) if run_dir else {}
        row = classifier_row("3", f"cam_vgg16 ({preset})", command, metrics, minutes)
        row["randomisation"] = metrics.get("randomisation_correlation")
        rows.append(row)
    return rows


TASKS = {"1-2": task12_rows, "3": task3_rows}
NEEDS = {"1-2": "skin", "3": "skin"}  # the data-folder flag each task reads


def print_table(rows):
    """One markdown table over the union of the rows' keys, numbers to 3 decimals."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(cell(row.get(c)) for c in columns) + " |")


def main(argv=None):
    args = parse_arguments(argv)
    tasks = [t for t in (args.tasks or TASKS) if getattr(args, NEEDS[t])]
    if not tasks:
        fail("no data folder given; pass --skin DIR (e.g. data/Skin)")
    rows = [row for task in tasks for row in TASKS[task](args)]
    if not args.list:
        print_table(rows)


if __name__ == "__main__":
    main()
