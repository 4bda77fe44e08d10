"""Before the pipeline of `main_segmentation.py` runs: its flags, the plan of experiments (new, or
the saved one of `--resume`), and every check that can fail fast, before TensorFlow starts."""

import json

from medlab import quiet_tensorflow
from medlab.app.cli import Parser, add_parameter_flags, check_range, resolve_parameters, typed_flags
from medlab.app.data import locate_data
from medlab.app.runs import UserError
from medlab.app.segmentation.grouping import GROUPING_HELP, check_grouping, check_groups
from medlab.app.segmentation.run import SegmentationRun, summary_folder
from medlab.comparisons import check_names, parse_compare
from medlab.distribute import SCALING_HELP, check_scaling, configure_scaling
from medlab.lazy import lazy_import
from medlab.pairs import find_pairs, validation_count

xray = lazy_import("medlab.synthetic.xray")

HELP = {
    "data_dir": "folder with Image/ and Mask/ subfolders (identical file names)",
    "size": "images and masks are resized to SIZE x SIZE",
    "base": "filters of the first U-Net level",
    "depth": "number of U-Net levels; SIZE must be divisible by 2**DEPTH",
    "dropout": "dropout rate after each pooling and skip concatenation, in [0, 1)",
    "batch_norm": "batch normalisation between each convolution and its ReLU",
    "augment": "joint random rotation 10 deg, shift 0.1, zoom 0.2 and flip of image and mask",
    "loss": "training loss: bce, dice or bce_dice (their sum)",
    "batch_size": "pairs per training step",
    "lr": "Adam learning rate",
    "lr_schedule": "constant, or cosine: decays from --lr to 0 over the run",
    "postprocess": "keep the two largest connected regions of each predicted mask and fill their "
    "holes (metrics.json also reports the scores without it)",
    "epochs": "training epochs per experiment",
    "val_fraction": "share of pairs held out for validation",
    "folds": "K-fold cross-validation over all pairs (0 = the --val-fraction split); every image "
    "is scored once by the fold model that did not see it",
    "seed": "seed of the split, the weights, the shuffling and the augmentation",
    "out": "folder that receives one new folder per run",
    "cache": "auto (memory when preloading fits --memory-budget-gb, else none), memory (decode all "
    "pairs once), disk (decode while training, cache to a file) or none (decode every epoch)",
    "memory_budget_gb": "memory the decoded data set may use before --cache auto streams it",
    **SCALING_HELP,
    **GROUPING_HELP,
}


LOSS_NAMES = ("bce", "dice", "bce_dice")  # the keys of unet.LOSSES, known without TensorFlow
CACHE_MODES = ("auto", "memory", "disk", "none")
LR_SCHEDULES = ("constant", "cosine")


# Parameters newer than the first runs.json plans: an older plan (resumed) or a partial block gets
# the lab's behaviour.
ADDED_PARAMETERS = {
    "lr_schedule": "constant",
    "postprocess": False,
    "groups": "none",
    "holdout_group": "",
}


def start(argv, parameters, experiments, demo, comparisons=(), default_experiments=None):
    """Everything before the pipeline: the flags, the plan, checks of every parameter and of the
    data folder, then TensorFlow and the distribution strategy.

    Args:
        argv: the command line after the script's name.
        parameters, experiments, demo, comparisons: the blocks at the top of main_segmentation.py.
        default_experiments: those run without --experiments (all when None).
    Returns:
        The `SegmentationRun` whose `pending()` experiments the pipeline trains.
    """
    args = parse_arguments(argv, parameters, experiments, default_experiments)
    flags = typed_flags(args, parameters)
    comparisons = [
        *check_names(comparisons, experiments, "the COMPARISONS block:"),
        *parse_compare(args.compare, experiments),
    ]
    if args.resume:
        plan = resume_plan(args, flags, parameters)
    else:
        plan = new_plan(args.experiments, flags, parameters, experiments, demo, default_experiments)
    for p in plan.values():
        check_parameters(p)
    first = next(iter(plan.values()))
    check_split(first, len(find_pairs(first["data_dir"])[0]))  # a wrong folder answers at once
    check_groups(first)
    quiet_tensorflow()
    scaling = configure_scaling(
        first["strategy"], first["mixed_precision"], first["jit"], first["batch_size"]
    )
    return SegmentationRun(plan, setting_keys(experiments), comparisons, scaling, args.resume)


def parse_arguments(argv, parameters, experiments, default=None):
    parser = Parser(
        prog="main_segmentation.py",
        description="U-Net lung segmentation experiments 4a-4e (Task 4). "
        "Use 'predict MODEL IMAGE...' to segment new images with a saved model, 'evaluate MODEL "
        "--data-dir DIR' to score it on a folder of pairs.",
    )
    parser.add_argument(
        "--experiments",
        help=f"comma-separated subset of {', '.join(experiments)} "
        f"(default: {', '.join(default) if default else 'all'})",
    )
    parser.add_argument(
        "--compare",
        action="append",
        metavar="A:B",
        help="also compare experiment A with B "
        "on the same images (repeatable); the lab's comparisons are always made",
    )
    parser.add_argument(
        "--resume",
        metavar="SUMMARY_DIR",
        help="finish an interrupted invocation: "
        "completed experiments are kept, an interrupted one resumes from its last epoch",
    )
    add_parameter_flags(parser, parameters, HELP)
    return parser.parse_args(argv)


def new_plan(names, flags, parameters, experiments, demo, default_experiments):
    """{experiment: its parameters}: defaults < demo settings (synthetic data) < the experiment's
    own settings < the flags typed."""
    seed = flags.get("seed", parameters["seed"])
    data_dir, demo_settings = locate_data(
        flags.get("data_dir"),
        parameters["data_dir"],
        lambda: synthetic_xrays(demo["pairs"], seed),
        f"{demo['pairs']} generated chest X-rays",
        {k: v for k, v in demo.items() if k != "pairs"},
        flags,
    )
    return {
        name: {
            **resolve_parameters(parameters, flags, demo_settings, experiments[name]),
            "data_dir": str(data_dir),
        }
        for name in choose_experiments(names, experiments, default_experiments)
    }


def synthetic_xrays(count, seed):
    """The demo set, generated on first use; its progress bar starts TensorFlow, silenced here."""
    quiet_tensorflow()
    return xray.synthetic_xray_set(count=count, seed=seed)


def choose_experiments(names, experiments, default=None):
    """The experiments named in `names` (comma-separated), or `default` (all when None)."""
    if not names:
        return list(default or experiments)
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in experiments]
    if unknown:
        raise UserError(
            f"unknown experiment {', '.join(unknown)}; choose from {', '.join(experiments)}"
        )
    if not chosen:
        raise UserError(
            f"--experiments {names!r} names no experiment; choose from {', '.join(experiments)}"
        )
    return chosen


def resume_plan(args, flags, parameters):
    """The saved plan of the summary folder being resumed; flags cannot change it midway."""
    given = [f"--{name.replace('_', '-')}" for name in flags] + (
        ["--experiments"] if args.experiments else []
    )
    if given:
        raise UserError(
            f"--resume continues a run with the settings it started with, so {' '.join(given)} "
            "cannot be applied; drop them, or start a new run to change settings"
        )
    path = summary_folder(None, args.resume) / "runs.json"
    try:
        plan = json.loads(path.read_text())
        if not plan or not all(
            isinstance(p, dict) and set(parameters) <= set(p) for p in plan.values()
        ):
            raise ValueError("no experiments, or parameters missing")
    except (ValueError, AttributeError) as error:
        raise UserError(
            f"{path} is damaged ({error}); start a new run, or restore the file "
            "(it lists each experiment's parameters)"
        ) from None
    return {name: {**ADDED_PARAMETERS, **p} for name, p in plan.items()}


def setting_keys(experiments):
    """Every parameter some experiment sets, in order of first appearance: the settings columns."""
    return list(dict.fromkeys(key for settings in experiments.values() for key in settings))


def check_parameters(p):
    """Reject nonsense parameters with a one-line message before any work starts."""
    p = {**ADDED_PARAMETERS, **p}
    if p["loss"] not in LOSS_NAMES:
        raise UserError(f"--loss {p['loss']} is unknown; choose one of {', '.join(LOSS_NAMES)}")
    if p["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(
            f"--lr-schedule {p['lr_schedule']} is unknown; choose one of {', '.join(LR_SCHEDULES)}"
        )
    check_range("epochs", p["epochs"], 1, hint="; train for at least one epoch")
    check_range("dropout", p["dropout"], 0.0, 1.0, high_open=True)
    check_range("val_fraction", p["val_fraction"], 0.01, 0.9)
    check_range("lr", p["lr"], 1e-12)
    check_range("memory_budget_gb", p["memory_budget_gb"], 0.01)
    if p["cache"] not in CACHE_MODES:
        raise UserError(f"--cache {p['cache']} is unknown; choose one of {', '.join(CACHE_MODES)}")
    check_scaling(p)
    for name in ("batch_size", "base", "depth", "size"):
        check_range(name, p[name], 1)
    if p["size"] % 2 ** p["depth"]:
        raise UserError(
            f"--size {p['size']} must be divisible by 2**depth = {2 ** p['depth']}; "
            f"try --size {max(2 ** p['depth'], p['size'] - p['size'] % 2 ** p['depth'])}"
        )
    check_folds(p.get("folds", 0))
    check_grouping(p)
    check_training_memory(p)


def check_folds(folds):
    if folds < 0 or folds == 1:
        raise UserError(
            f"--folds {folds} is not cross-validation; use 0 (the --val-fraction split) or K >= 2"
        )


def check_split(p, count):
    """Refuse, before anything is loaded, a split or folds that `count` pairs cannot fill."""
    if p["folds"] > count:
        raise UserError(
            f"--folds {p['folds']} needs at least {p['folds']} image/mask pairs, but there are "
            f"{count}; lower --folds or add pairs"
        )
    if p["folds"] < 2 and validation_count(count, p["val_fraction"]) >= count:
        raise UserError(
            f"only {count} image/mask pair(s): too few to keep {p['val_fraction']:.0%} for "
            "validation; add pairs or lower --val-fraction"
        )


# Bytes per value while training in float32: each layer output is kept for the backward pass (4;
# a CPU step at size 256, base 8 grew the peak by 0.29 GB for batch 8 and 0.55 GB for 16, against
# 0.34 and 0.68 estimated); each weight has a gradient and Adam's two moments (4 x 4 bytes).
BYTES_PER_ACTIVATION, BYTES_PER_WEIGHT = 4, 16


def check_training_memory(p):
    """Refuse a model whose training memory alone exceeds --memory-budget-gb, before it is built."""
    values = unet_activations(p["size"], p["base"], p["depth"], p["batch_norm"], p["dropout"])
    needed = (
        values * p["batch_size"] * BYTES_PER_ACTIVATION
        + unet_weights(p["base"], p["depth"]) * BYTES_PER_WEIGHT
    ) / 2**30
    if needed > p["memory_budget_gb"]:
        raise UserError(
            f"training a U-Net of --base {p['base']} at --size {p['size']} with --batch-size "
            f"{p['batch_size']} needs about {needed:.3g} GB, over --memory-budget-gb "
            f"{p['memory_budget_gb']:g}; lower --batch-size, --size or --base, or raise "
            "--memory-budget-gb if the machine (or GPU) has that much memory"
        )


def unet_activations(size, base, depth, batch_norm, dropout):
    """Layer-output values of `build_unet` for one image (exact for the layers it builds)."""
    per_block = 4 + 2 * bool(batch_norm)  # two convolutions and two ReLUs (+ two batch norms)
    values = 2 * size * size  # the input and the output mask
    for level in range(depth):
        pixels, filters = (size // 2**level) ** 2, base * 2**level
        # down: the block, then pooling (+ dropout) on a quarter of the pixels;
        # up: transposed convolution, concatenation (+ dropout), then the block.
        down = per_block + (1 + bool(dropout)) / 4
        up = 1 + 2 + 2 * bool(dropout) + per_block
        values += pixels * filters * (down + up)
    return values + (size // 2**depth) ** 2 * base * 2**depth * per_block


def unet_weights(base, depth):
    """Convolution weights of `build_unet` (biases and batch-norm values are a rounding error)."""

    def block(c_in, c_out):
        return 9 * c_in * c_out + 9 * c_out * c_out

    weights = block(base * 2 ** (depth - 1), base * 2**depth) + base  # bottleneck and output layer
    for level in range(depth):
        filters = base * 2**level
        weights += (
            block(filters // 2 if level else 1, filters)
            + 8 * filters**2
            + block(2 * filters, filters)
        )
    return weights
