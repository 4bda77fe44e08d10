"""`main_segmentation.py predict` and `evaluate`: a saved U-Net segments new images, or is scored
on a folder of pairs. Every input is checked before an output folder is made."""

import csv
import json
from argparse import BooleanOptionalAction
from pathlib import Path

import numpy as np

from medlab import quiet_tensorflow
from medlab.app import data_record
from medlab.app.cli import Parser
from medlab.app.collapse import print_bold
from medlab.app.outputs import write_output_names
from medlab.app.runs import (
    UserError,
    mark_complete,
    new_run_dir,
    save_config,
    write_json,
)
from medlab.app.segmentation.ensemble import (
    HELD_OUT_HELP,
    MODELS_HELP,
    TTA_HELP,
    describe_models,
    load_ensemble,
    score_pairs,
    split_models,
    validated_indices,
)
from medlab.app.segmentation.parameters import POSTPROCESS_HELP
from medlab.app.sidecars import load_model_and_settings, read_sidecar
from medlab.images import decode, save_image, to_channels, to_unit_range
from medlab.pairs import find_pairs


def predict_command(argv, parameters):
    """`predict MODEL IMAGE...`: binary masks at each image's own size, and overlays."""
    parser = Parser(
        prog="main_segmentation.py predict",
        description="Segment new chest X-rays with a saved U-Net.",
    )
    parser.add_argument("model", metavar="MODEL", help=MODELS_HELP)
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, after more models if any"
    )
    parser.add_argument(
        "--out",
        default=parameters["out"],
        help="folder for the new predict-* folder (default: %(default)s)",
    )
    add_mask_flags(parser)
    args = parser.parse_args(argv)
    model_paths, images = split_models(args.model, args.images)
    for path in images:  # all checked before any folder is made (decoded again below)
        decode(path)
    quiet_tensorflow()
    import unet  # TensorFlow starts here, once the command line and the images are checked

    models, files = load_ensemble(model_paths, load_segmentation_model)
    postprocess = ensemble_setting(files, "postprocess", args.postprocess)
    args.tta = ensemble_setting(files, "tta", args.tta)
    out_dir = new_run_dir(args.out, "predict")
    print(f"masks of {describe_models(files, args.tta)}")
    names = write_output_names(out_dir, images, ("_mask.png", "_overlay.png"))
    for path, name in zip(map(Path, images), names):
        original = to_channels(to_unit_range(decode(path)), 1)
        mask = unet.predict_full_size(models, original, postprocess, args.tta)
        save_image(out_dir / f"{name}_mask.png", mask)
        save_image(out_dir / f"{name}_overlay.png", unet.overlay_mask(original, mask))
        warning = mask_warning(mask, unet.FULL_SHARE)
        print(f"{path}: lung area {mask.mean():.1%} of the image{warning}")
    mark_complete(out_dir)
    print(f"masks and overlays: {out_dir}")


def mask_warning(mask, full_share):
    """Bold words for a mask that cannot be a lung segmentation: empty, or at least `full_share`
    of the image."""
    if not mask.any():
        return " **(empty: no lung found; a model that predicts this everywhere has not learnt)**"
    if mask.mean() >= full_share:
        return " **(nearly the whole image: this is no lung mask)**"
    return ""


def add_mask_flags(parser):
    """--postprocess and --tta, whose defaults are the experiments' own (`ensemble_setting`)."""
    parser.add_argument(
        "--postprocess",
        action=BooleanOptionalAction,
        default=None,
        help=f"{POSTPROCESS_HELP} (default: as in the experiment, from the model's .json)",
    )
    parser.add_argument(
        "--tta",
        action=BooleanOptionalAction,
        default=None,
        help=f"{TTA_HELP} (default: as in the experiment, from the model's .json)",
    )


def ensemble_setting(files, name, flag):
    """How to make the masks (`postprocess`, `tta`): the flag if given, else what the models'
    experiments used (their sidecars, False without one); models that disagree need the flag.
    Neither is a property of the model's input, so the flag may override the experiments."""
    if flag is not None:
        return flag
    used = {(read_sidecar(file, "main_segmentation.py") or {}).get(name, False) for file in files}
    if len(used) > 1:
        option = name.replace("_", "-")
        raise UserError(
            f"the models {', '.join(map(str, files))} were trained with and without --{option}; "
            f"say which with --{option} or --no-{option}"
        )
    return used.pop()


def load_segmentation_model(path, compile=True, with_settings=False):
    """A U-Net saved by an experiment (and its sidecar's settings, None for a model without one),
    or a one-line `UserError` naming the file."""
    import unet  # noqa: F401  registers the losses and metrics Keras needs to load the model

    model, settings = load_model_and_settings(path, "main_segmentation.py", compile=compile)
    check_segmentation_model(model, path)
    return (model, settings) if with_settings else model


def check_segmentation_model(model, path):
    """A model mapping a square grey image to a same-size one-channel mask, as experiments save."""
    inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    if len(inputs) != 4 or inputs[3] != 1 or outputs != inputs:
        raise UserError(
            f"model {path} is not a segmentation model (it maps {inputs[1:]} to {outputs[1:]}, "
            "not an image to a mask of its size); pass a model.keras written by "
            "main_segmentation.py"
        )


def evaluate_command(argv, parameters):
    """`evaluate MODEL --data-dir DIR`: a saved U-Net scored on every pair in a folder."""
    parser = Parser(
        prog="main_segmentation.py evaluate",
        description="Score a saved U-Net on a folder of X-rays and lung masks.",
    )
    parser.add_argument("model", nargs="+", metavar="MODEL", help=f"{MODELS_HELP}; or best.keras")
    parser.add_argument(
        "--data-dir", required=True, help="folder with Image/ and Mask/ (identical file names)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=parameters["batch_size"],
        help="images per prediction step (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=parameters["out"],
        help="folder for the new evaluate-* folder (default: %(default)s)",
    )
    add_mask_flags(parser)
    parser.add_argument("--held-out", action="store_true", help=HELD_OUT_HELP)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is out of range: at least 1")
    quiet_tensorflow()
    import unet  # TensorFlow starts here, once the command line is checked
    from medlab.app.segmentation.summary import write_per_image

    models, files = load_ensemble(args.model, lambda p: load_segmentation_model(p, compile=False))
    args.postprocess = ensemble_setting(files, "postprocess", args.postprocess)
    args.tta = ensemble_setting(files, "tta", args.tta)
    every = unet.load_every_pair(
        args.data_dir, models[0].input_shape[1], "auto", parameters["memory_budget_gb"]
    )
    held_out = validated_indices(files, every["names"]) if args.held_out else None
    if held_out:
        check_validated_unchanged(files, held_out, args.data_dir)
        warn_partly_scored(sum(map(len, held_out)), len(every["names"]), args.data_dir)
    out_dir = new_run_dir(args.out, "evaluate")  # only once model and data proved good
    used = {"model": describe_models(files, False), "models": [str(f) for f in files]}
    used.update(tta=args.tta, postprocess=args.postprocess, held_out=args.held_out)
    save_config(out_dir, {**used, "data_dir": str(args.data_dir), "size": every["size"]})
    scores, shown, names = score_pairs(
        models, every, args.batch_size, args.tta, args.postprocess, held_out
    )
    # With --held-out every model scores only its own validation images: none are seen ones.
    trained = (
        set()
        if args.held_out
        else set().union(*(training_images(file, args.data_dir) for file in files))
    )
    seen = np.isin(names, sorted(trained))
    metrics = {
        **unet.score_summary(scores, prefix=""),
        "images": len(names),
        **used,
        "training_images": int(seen.sum()),  # the models' own: their scores there are optimistic
        "unseen": unseen_scores(scores, ~seen) if seen.any() else None,
    }
    write_json(out_dir / "metrics.json", metrics)
    write_per_image(out_dir / "per_image.csv", names, scores)
    unet.plot_overlays(*shown, scores["dice"], out_dir / "overlays.png", names)
    mark_complete(out_dir)
    if seen.any():
        print_bold(
            f"warning: {seen.sum()} of the {seen.size} pairs in {args.data_dir} are the "
            f"{describe_models(files, False)}'s own training images, so the scores over all of "
            "them are optimistic; the scores on the unseen images alone follow."
        )
    print(
        f"{describe_models(files, args.tta, args.held_out)} on {len(names)} pairs of "
        f"{args.data_dir}: {score_line(metrics)}"
    )
    if seen.any():
        unseen = metrics["unseen"]
        line = score_line(unseen) if unseen["images"] else "none: every pair was used in training"
        print(f"on the {unseen['images']} pairs it did not train on: {line}")
    print(f"scores and overlays: {out_dir}")


def score_line(metrics):
    return (
        f"Dice {metrics['dice']:.3f} +- {metrics['dice_std']:.3f}, IoU {metrics['iou']:.3f}, "
        f"HD95 {metrics['hd95']:.1f} px, precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}"
    )


def unseen_scores(scores, keep):
    """The summary of the per-image `scores` of the images `keep` marks, and their count."""
    import unet

    if not keep.any():
        return {"images": 0}
    return {
        **unet.score_summary({k: v[keep] for k, v in scores.items()}, prefix=""),
        "images": int(keep.sum()),
    }


def warn_partly_scored(scored, pairs, data_dir):
    if scored < pairs:
        print_bold(
            f"warning: --held-out scores {scored} of the {pairs} pairs in {data_dir}; no model "
            "given validated on the others, so this is not a cross-validated score of the folder "
            "(pass the experiment's folder to use every fold)"
        )


def check_validated_unchanged(files, held_out, data_dir):
    """Each model's validation pairs (`held_out` positions) are the files its run recorded."""
    images, masks = find_pairs(data_dir)
    for file, indices in zip(files, held_out):
        pairs = [path for i in indices for path in (images[i], masks[i])]
        data_record.check_validated(Path(file).parent, pairs, data_dir)


def training_images(model_path, data_dir):
    """The file names of the pairs `model_path` was trained on, when `data_dir` is the folder it
    was trained from: every pair there but its validation images (the run folder's config.json
    names the folder, its per_image.csv the validation images). Empty when unknown."""
    run = Path(model_path).parent
    try:
        trained_on = json.loads((run / "config.json").read_text())["parameters"]["data_dir"]
        with open(run / "per_image.csv", newline="") as handle:
            validation = {row["image"] for row in csv.DictReader(handle)}
    except (OSError, ValueError, KeyError):
        return set()
    if not same_folder(trained_on, data_dir):
        return set()
    import unet

    image_paths, _ = unet.find_pairs(data_dir)
    return {path.name for path in image_paths} - validation


def same_folder(recorded, given):
    """Whether `given` is the folder a run recorded, also when the run recorded it relative to
    another working folder (`data/X_ray` matches `/home/me/lab/data/X_ray`)."""
    recorded, given = Path(recorded), Path(given).resolve()
    if recorded.is_absolute():
        return recorded.resolve() == given
    return recorded.resolve() == given or given.parts[-len(recorded.parts) :] == recorded.parts
