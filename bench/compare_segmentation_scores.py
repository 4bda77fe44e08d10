"""Two ways of segmenting the same images, compared image by image (not a test): test-time
augmentation against none, an ensemble against one model, one recipe against another.

    python bench/compare_segmentation_scores.py --first RUN_A --second RUN_B
    python bench/compare_segmentation_scores.py --first A_SEED1,A_SEED2 --second B_SEED1,B_SEED2

Each run is a folder with a per_image.csv: an `evaluate` folder, or an experiment's folder of a
training run (after --folds, the experiment's folder, whose per_image.csv pools the folds). With
several runs on one side (e.g. training seeds), each image's scores are first averaged over them,
so that an image counts once however many seeds were run. Both sides must have scored the same
images. Prints the paired difference of Dice and HD95 with its 95% bootstrap interval, the
Wilcoxon p-value and a verdict, as the summary's comparisons do.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlab import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # the summary module loads TensorFlow (unet), which is chatty at start

from medlab.app.comparisons import compare_runs  # noqa: E402
from medlab.app.runs import main_guard  # noqa: E402
from medlab.app.segmentation.summary import COMPARED, collapse_kind  # noqa: E402
from medlab.errors import UserError  # noqa: E402


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for side in ("first", "second"):
        parser.add_argument(
            f"--{side}", required=True, help="a run folder, or several separated by commas"
        )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return parser.parse_args(argv)


def read_scores(folder):
    """{image: {metric: value}} of a folder's per_image.csv."""
    path = Path(folder) / "per_image.csv"
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass an evaluate or experiment folder")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["image"]: {m: float(row[m]) for m, _, _ in COMPARED} for row in rows}


def mean_over_runs(folders):
    """Per-image scores averaged over the runs of one side, which must share their images."""
    runs = [read_scores(folder) for folder in folders]
    images = sorted(runs[0])
    for folder, run in zip(folders[1:], runs[1:]):
        if sorted(run) != images:
            raise UserError(
                f"{folders[0]} and {folder} scored different images; pass runs of one set"
            )
    return {
        "image": images,
        **{
            m: np.array([np.mean([run[i][m] for run in runs]) for i in images])
            for m, _, _ in COMPARED
        },
    }


def not_learnt(sides):
    """{side: (what it did, what to do)} of the sides with a run that collapsed (its
    metrics.json says so), so that their comparison gets no verdict."""
    found = {}
    for side, folders in sides.items():
        for folder in folders:
            path = Path(folder) / "metrics.json"
            kind = collapse_kind(json.loads(path.read_text())) if path.is_file() else None
            if kind:
                todo = f"Rerun it with the command its summary.md gives ({folder})."
                found[side] = (f"{folder} collapsed to the {kind}", todo)
    return found


def main(argv=None):
    args = parse_arguments(argv)
    sides = {side: getattr(args, side).split(",") for side in ("first", "second")}
    scores = {side: mean_over_runs(folders) for side, folders in sides.items()}
    results, notes = compare_runs(
        [("first", "second", "")], scores, COMPARED, args.seed, not_learnt=not_learnt(sides)
    )
    if notes:
        raise UserError("the two sides scored different images; pass runs of the same images")
    for side, folders in sides.items():
        print(f"{side}: {', '.join(folders)}")
    for key, result in results[0]["metrics"].items():
        low, high = result["ci"]
        print(
            f"{key}: first {result['mean_first']:.4f}, second {result['mean_second']:.4f}, "
            f"difference {result['difference']:+.4f} [{low:+.4f}, {high:+.4f}] over "
            f"{result['images']} images; {result['verdict']}"
        )


if __name__ == "__main__":
    main_guard(main)()
