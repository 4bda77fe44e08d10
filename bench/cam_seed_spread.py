"""How far the training seed alone moves cam_vgg16.py's validation scores (docs/real-data.md).

    python bench/cam_seed_spread.py --seeds 0,1,2,3 --data-dir DIR --preset recommended --channels 3

Every flag other than --seeds is cam_vgg16.py's own and means what it means there. The split is the
one `cam_vgg16.py --seed S` makes (S: --seed, default 0) and stays fixed; each training seed then
gives the network its own initial weights, batch order and augmentation, so the spread of the rows
is the noise of training alone, which a difference between two settings measured once has to beat.
The row of training seed S is exactly the run `cam_vgg16.py --seed S` (same flags); the other rows
differ from such a run only in the training seed (cam_vgg16.py's --seed also picks the split of a
flat folder). The last row averages the models' probabilities (an ensemble), with 95% bootstrap
intervals. Nothing is saved.
"""

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cam_vgg16  # noqa: E402
from medlab.app import runs  # noqa: E402
from medlab.app.classification import cam_run  # noqa: E402
from medlab.classification.metrics import binary_metrics, bootstrap_metrics  # noqa: E402

SHOWN = ("accuracy", "balanced_accuracy", "auc")


def seed_list(text):
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 0,1,2") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError("give at least two different seeds, e.g. 0,1,2")
    return seeds


def validation_scores(params, split, train_images, val_images, seed):
    """Class-1 probabilities for the validation images of one network trained with `seed`."""
    from medlab.classification import cam

    params = {**params, "seed": seed}
    runs.set_seed(seed)
    model, _, global_batch = cam_vgg16.build(params, len(train_images))
    batches = {**params, "batch_size": global_batch}
    with tempfile.TemporaryDirectory() as logs:  # cam.train's history
        cam.train(
            model,
            cam.training_dataset(train_images, split.train_labels, batches),
            cam.validation_dataset(val_images, split.val_labels, batches),
            params,
            Path(logs),
            split.train_labels,
        )
    scores = model.predict(val_images, batch_size=64, verbose=0)[:, 1]
    cam.release_models()
    return scores


def row(label, metrics, extra=""):
    return f"| {label} | " + " | ".join(f"{metrics[k]:.3f}" for k in SHOWN) + f" | {extra} |"


def print_table(labels, scores, metrics, lines, heading):
    """The seeds' rows, their mean and spread, and the average of the models' probabilities."""
    table = np.array([[seed_metrics[k] for k in SHOWN] for seed_metrics in metrics.values()])
    mean, spread = table.mean(axis=0), table.std(axis=0, ddof=1)
    average = np.mean(list(scores.values()), axis=0)
    ensemble = binary_metrics(labels, average)
    low_high = bootstrap_metrics(labels, {"average": average})["average"]
    print(
        f"\n{heading}\n| run | accuracy | balanced accuracy | AUC | time |\n|---|---|---|---|---|"
    )
    print("\n".join(lines))
    print(
        "| mean +- sd | " + " | ".join(f"{m:.3f} +- {s:.3f}" for m, s in zip(mean, spread)) + " | |"
    )
    cells = [f"{ensemble[k]:.3f} [{low_high[k][0]:.3f}, {low_high[k][1]:.3f}]" for k in SHOWN]
    print(f"| average of the {len(scores)} models' probabilities | " + " | ".join(cells) + " | |")


@functools.partial(runs.main_guard, lower=cam_run.LOWER_ON_OUT_OF_MEMORY)
def main(argv=None):
    if {"-h", "--help"} & set(argv if argv is not None else sys.argv[1:]):
        print(__doc__)
        return
    # allow_abbrev=False: else argparse would take cam_vgg16.py's --seed for --seeds.
    parser = argparse.ArgumentParser(prog="cam_seed_spread.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2, 3])
    ours, rest = parser.parse_known_args(argv)
    # The flags, the data, the parameters, the split and the checks, as cam_vgg16.py's run.
    run = cam_run.start(
        rest,
        parameters=cam_vgg16.PARAMETERS,
        presets=cam_vgg16.PRESETS,
        demo=cam_vgg16.SYNTHETIC_DEMO,
        shortcut_demo=cam_vgg16.SHORTCUT_DEMO,
        commands=cam_vgg16.COMMANDS,
        doc=cam_vgg16.__doc__,
    )
    params, split = run.params, run.split
    if params["strategy"] == "multiworker":  # one strategy per process, and it trains several
        raise runs.UserError("the bench trains one model after another; leave out --strategy")
    train_images, val_images = run.load_images()
    scores, metrics, lines = {}, {}, []
    for seed in ours.seeds:
        start = time.perf_counter()
        scores[seed] = validation_scores(params, split, train_images, val_images, seed)
        minutes = f"{(time.perf_counter() - start) / 60:.1f} min"
        metrics[seed] = binary_metrics(split.val_labels, scores[seed])
        lines.append(row(f"training seed {seed}", metrics[seed], minutes))
        print(lines[-1], flush=True)
    images = f"{len(split.val_labels)} validation images of {run.data_folder}"
    heading = f"{images} (split seed {params['seed']})"
    print_table(split.val_labels, scores, metrics, lines, heading)


if __name__ == "__main__":
    main()
