"""Several saved U-Nets used as one by `predict` and `evaluate`: the model files named on the
command line (a file, or an experiment's folder, whose fold models are used after a `--folds`
run), loaded and checked to take the same images. `unet.predict_probabilities` averages them."""

import csv
import json
import re
from pathlib import Path

import numpy as np

from medlab.errors import UserError

MODEL_FILE = "model.keras"

MODELS_HELP = (
    f"a {MODEL_FILE} written by an experiment, or an experiment's folder (after --folds: the "
    "folder whose fold*/ models are all used); several models are averaged (an ensemble)"
)
HELD_OUT_HELP = (
    "score each image only with the model whose run validated on it (the images of the "
    "per_image.csv next to each model file): a --folds run's own cross-validated scores, "
    "e.g. again with --tta to compare image by image"
)
TTA_HELP = (
    "test-time augmentation: average each image's probabilities with those of its left-right "
    "mirror image (mirrored back) before thresholding; about twice the prediction time"
)


def split_models(first, rest):
    """predict's positional arguments MODEL [MODEL...] IMAGE...: `first` and the `.keras` files
    and experiment folders that follow it are models, the rest images."""
    models, rest = [first], list(rest)
    while rest and is_model_argument(rest[0]):
        models.append(rest.pop(0))
    if not rest:
        raise UserError(
            f"no image after the model(s) {' '.join(models)}; "
            "give the image files to segment after the models"
        )
    return models, rest


def is_model_argument(path):
    """A .keras file, or a folder holding an experiment's model(s); another folder is taken for an
    image, so that it is refused as one."""
    path = Path(path)
    if path.suffix == ".keras":
        return True
    return path.is_dir() and (any(path.glob(MODEL_FILE)) or any(path.glob(f"fold*/{MODEL_FILE}")))


def model_files(paths):
    """The model files that `paths` (files or experiment folders) name, each once, in order."""
    files = []
    for path in map(Path, paths):
        files.extend(models_in(path) if path.is_dir() else [path])
    return list(dict.fromkeys(files))


def models_in(folder):
    """An experiment folder's model.keras, or the fold<k>/model.keras of a `--folds` experiment."""
    if (folder / MODEL_FILE).is_file():
        return [folder / MODEL_FILE]
    folds = sorted(folder.glob(f"fold*/{MODEL_FILE}"), key=fold_number)
    if not folds:
        raise UserError(
            f"folder {folder} holds no {MODEL_FILE} and no fold*/{MODEL_FILE}; pass a model file "
            "or an experiment's folder (not the run's -summary folder)"
        )
    unfinished = unfinished_folds(folder)
    if unfinished:
        raise UserError(
            f"{folder} is a --folds experiment whose {', '.join(unfinished)} has no finished "
            "model (interrupted, or still training), so its models are not the cross-validated "
            "ensemble; finish the run with --resume, or name the finished folds' model files "
            "to use only those"
        )
    return folds


def unfinished_folds(folder):
    """The fold<k> folders of a --folds experiment that have no finished model: all K of them
    that its config.json names (else those found), a model's run being finished once its
    metrics.json is written."""
    counts = set()
    for config in folder.glob("fold*/config.json"):
        try:
            counts.add(int(json.loads(config.read_text())["parameters"]["folds"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if counts:
        names = [f"fold{k}" for k in range(1, max(counts) + 1)]
    else:
        names = [path.parent.name for path in folder.glob(f"fold*/{MODEL_FILE}")]
    return [name for name in names if not (folder / name / "metrics.json").is_file()]


def fold_number(path):
    """fold10 after fold9: the number in a fold<k> folder's name."""
    return int(re.sub(r"\D", "", path.parent.name) or 0)


def load_ensemble(paths, load):
    """The models of `paths` loaded with `load(file)` and their files; models that take images of
    another size or number of channels than the first are refused in one line."""
    files = model_files(paths)
    models = [load(file) for file in files]
    check_same_input(models, files)
    return models, files


def check_same_input(models, files):
    expected = tuple(models[0].input_shape[1:])
    for model, file in zip(models[1:], files[1:]):
        found = tuple(model.input_shape[1:])
        if found != expected:
            raise UserError(
                f"model {file} takes {describe_input(found)} but {files[0]} takes "
                f"{describe_input(expected)}; the models of one ensemble must take the same "
                "images: pass models trained with the same --size"
            )


def describe_input(shape):
    height, width, channels = shape
    return f"{height}x{width} images with {channels} channel(s)"


def describe_models(files, tta, held_out=False):
    """How the masks were made, for the console: one model or an ensemble (or, `held_out`, each
    model on its own validation images), mirrored or not."""
    if held_out:
        what = f"each of {len(files)} model(s) on the images its run validated on"
    else:
        what = f"{files[0]}" if len(files) == 1 else f"the mean of {len(files)} models"
    return what + (" with mirrored test-time augmentation" if tta else "")


def score_pairs(models, every, batch_size, tta=False, postprocess=False, held_out=None):
    """Per-image scores of the pairs of `every` (`unet.load_every_pair`), the first images, masks
    and predictions (for figures) and the names of the pairs scored, in the order scored: every
    pair by the mean of `models`, or, given `held_out` (`validated_indices`), each model's own
    validation pairs by that model alone. The masks are made as `predict` makes them."""
    import unet  # TensorFlow has started: the models are loaded

    if held_out is None:
        batches = unet.pairs_dataset({**every, "val": every["pairs"]}, "val", batch_size)
        scored = unet.evaluate_batches(models, batches, tta=tta, postprocess=postprocess)
        return (*scored, every["names"])
    parts = [
        unet.evaluate_batches(
            model,
            unet.pairs_dataset(unet.split_pairs(every, NONE, indices), "val", batch_size),
            tta=tta,
            postprocess=postprocess,
        )
        for model, indices in zip(models, held_out)
    ]
    scores = {metric: np.concatenate([s[metric] for s, _ in parts]) for metric in parts[0][0]}
    order = np.concatenate(held_out)
    return scores, parts[0][1], [every["names"][i] for i in order]


NONE = np.array([], dtype=int)


def validated_indices(files, names):
    """For each model file, the positions in `names` of the images its run validated on (the
    per_image.csv next to it); an image validated on by two of the models is refused."""
    position = {name: i for i, name in enumerate(names)}
    folds = []
    for file in files:
        table = Path(file).parent / "per_image.csv"
        if not table.is_file():
            raise UserError(
                f"{table} does not exist, so the images that {file} was validated on are "
                "unknown; pass the models of a finished run, or drop --held-out"
            )
        with open(table, newline="") as handle:
            validated = [row["image"] for row in csv.DictReader(handle)]
        missing = [name for name in validated if name not in position]
        if missing:
            raise UserError(
                f"{len(missing)} image(s) of {table} are not pairs of --data-dir "
                f"({', '.join(missing[:3])}); pass the folder the run was trained on"
            )
        folds.append(np.array([position[name] for name in validated], dtype=int))
    every = np.concatenate(folds)
    if len(set(every.tolist())) < len(every):
        raise UserError(
            "an image was validated on by two of the models; with --held-out pass the fold "
            "models of one --folds run"
        )
    return folds
