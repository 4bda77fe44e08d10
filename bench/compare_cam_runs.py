"""Two cam_vgg16.py runs on the same validation images: each one's AUC and balanced accuracy with
95% bootstrap intervals, and the paired interval of their difference (docs/real-data.md).

    python bench/compare_cam_runs.py results/cam/RUN_A results/cam/RUN_B

Run it from the folder the two runs were started in (their config.json may name the data folder
relative to it). Both runs must have used the same data folder and seed, so that they split the
images the same way; each saved model is applied to the validation images at its own input size.
Every resample draws the same images for both models, so the interval of the difference reflects
how the models disagree, not which images happened to be drawn.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlab import quiet_tensorflow  # noqa: E402
from medlab.app import runs  # noqa: E402
from medlab.classification.data import load_arrays, load_class_split  # noqa: E402
from medlab.classification.metrics import binary_metrics, bootstrap_metrics  # noqa: E402

SHOWN = ("accuracy", "balanced_accuracy", "auc")


def run_settings(run_dir):
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        raise runs.UserError(f"{config} does not exist; pass a run folder of cam_vgg16.py")
    parameters = json.loads(config.read_text())["parameters"]
    return {key: parameters[key] for key in ("data_folder", "seed", "size", "channels")}


def validation_scores(run_dir, split, settings):
    """Class-1 probabilities of the run's saved model for the split's validation images."""
    size = (settings["size"], settings["size"])
    images = load_arrays(split.val_paths, size, settings["channels"], Path(run_dir).name)
    model = runs.load_keras_model(Path(run_dir) / "model.keras", "cam_vgg16.py", compile=False)
    return model.predict(images, batch_size=64, verbose=0)[:, 1]


@runs.main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="a cam_vgg16.py run folder")
    parser.add_argument("second", help="another run folder, on the same data and seed")
    args = parser.parse_args(argv)
    first, second = run_settings(args.first), run_settings(args.second)
    if (first["data_folder"], first["seed"]) != (second["data_folder"], second["seed"]):
        raise runs.UserError(
            "the runs used different data folders or seeds, so their validation images differ; "
            "pass two runs on the same data and --seed"
        )
    split = load_class_split(first["data_folder"], seed=first["seed"])
    quiet_tensorflow()
    names = (Path(args.first).name, Path(args.second).name)
    scores = {
        names[0]: validation_scores(args.first, split, first),
        names[1]: validation_scores(args.second, split, second),
    }
    intervals = bootstrap_metrics(split.val_labels, scores)
    point = {name: binary_metrics(split.val_labels, scores[name]) for name in names}
    point["difference"] = {k: point[names[0]][k] - point[names[1]][k] for k in SHOWN}
    print(f"{len(split.val_labels)} validation images, 2,000 paired resamples, 95% intervals")
    for name in (*names, "difference"):
        label = f"{names[0]} - {names[1]}" if name == "difference" else name
        cells = [
            f"{k} {point[name][k]:.3f} [{intervals[name][k][0]:.3f}, {intervals[name][k][1]:.3f}]"
            for k in SHOWN
        ]
        print(f"{label}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
