"""`main_segmentation.py predict` and `evaluate`: a saved U-Net segments new images, or is scored
on a folder of pairs. Every input is checked before an output folder is made."""

from pathlib import Path

from medlab import quiet_tensorflow
from medlab.app.cli import Parser
from medlab.app.runs import (
    UserError,
    load_keras_model,
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
from medlab.app.segmentation.parameters import DECLARED
from medlab.images import decode, save_image, to_channels, to_unit_range


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
    parser.add_argument("--postprocess", action="store_true", help=DECLARED["postprocess"].help)
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    args = parser.parse_args(argv)
    model_paths, images = split_models(args.model, args.images)
    for path in images:  # all checked before any folder is made (decoded again below)
        decode(path)
    quiet_tensorflow()
    import unet  # TensorFlow starts here, once the command line and the images are checked

    models, files = load_ensemble(model_paths, load_segmentation_model)
    out_dir = new_run_dir(args.out, "predict")
    print(f"masks of {describe_models(files, args.tta)}")
    for path in map(Path, images):
        original = to_channels(to_unit_range(decode(path)), 1)
        mask = unet.predict_full_size(models, original, args.postprocess, args.tta)
        save_image(out_dir / f"{path.stem}_mask.png", mask)
        save_image(out_dir / f"{path.stem}_overlay.png", unet.overlay_mask(original, mask))
        print(f"{path}: lung area {mask.mean():.1%} of the image")
    mark_complete(out_dir)
    print(f"masks and overlays: {out_dir}")


def load_segmentation_model(path, compile=True):
    """A U-Net saved by an experiment, or a one-line `UserError` naming the file."""
    import unet  # noqa: F401  registers the losses and metrics Keras needs to load the model

    model = load_keras_model(path, "main_segmentation.py", compile=compile)
    check_segmentation_model(model, path)
    return model


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
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    parser.add_argument("--held-out", action="store_true", help=HELD_OUT_HELP)
    args = parser.parse_args(argv)
    quiet_tensorflow()
    import unet  # TensorFlow starts here, once the command line is checked
    from medlab.app.segmentation.summary import write_per_image

    models, files = load_ensemble(args.model, lambda p: load_segmentation_model(p, compile=False))
    every = unet.load_every_pair(
        args.data_dir, models[0].input_shape[1], "auto", parameters["memory_budget_gb"]
    )
    held_out = validated_indices(files, every["names"]) if args.held_out else None
    out_dir = new_run_dir(args.out, "evaluate")  # only once model and data proved good
    used = {"model": describe_models(files, False), "models": [str(f) for f in files]}
    used.update(tta=args.tta, held_out=args.held_out)
    save_config(out_dir, {**used, "data_dir": str(args.data_dir), "size": every["size"]})
    scores, shown, names = score_pairs(models, every, max(1, args.batch_size), args.tta, held_out)
    metrics = {**unet.score_summary(scores, prefix=""), "images": len(names), **used}
    write_json(out_dir / "metrics.json", metrics)
    write_per_image(out_dir / "per_image.csv", names, scores)
    unet.plot_overlays(*shown, scores["dice"], out_dir / "overlays.png", names)
    mark_complete(out_dir)
    print(
        f"{describe_models(files, args.tta, args.held_out)} on {len(names)} pairs of "
        f"{args.data_dir}: "
        f"Dice {metrics['dice']:.3f} +- {metrics['dice_std']:.3f}, IoU {metrics['iou']:.3f}, "
        f"HD95 {metrics['hd95']:.1f} px, precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}\nscores and overlays: {out_dir}"
    )
