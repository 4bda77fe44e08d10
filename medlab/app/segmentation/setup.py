"""Before the pipeline of `main_segmentation.py` runs: its flags, the plan of experiments (new, or
the saved one of `--resume`) with each value's source, and every check that can fail fast, before
TensorFlow starts."""

import dataclasses
import json
from pathlib import Path

from medlab import quiet_tensorflow
from medlab.app.cli import (
    Parser,
    Resolved,
    add_parameter_flags,
    epilog,
    print_parameters,
    resolve,
    typed_flags,
)
from medlab.app.comparisons import check_names, parse_compare
from medlab.app.data import locate_data
from medlab.app.data_record import check_resume
from medlab.app.runs import check_saved_parameters
from medlab.app.segmentation.folders import SOURCES_FILE, checked_summary_folder, pairs_record
from medlab.app.segmentation.grouping import check_grouping, check_groups
from medlab.app.segmentation.parameters import DECLARED
from medlab.distribute import configure_scaling
from medlab.errors import UserError
from medlab.pairs import find_pairs, validation_count
from medlab.parameters import defaults

# Parameters newer than the first runs.json plans: an older plan (resumed) gets the lab's values.
ADDED_PARAMETERS = (
    "lr_schedule",
    "postprocess",
    "groups",
    "holdout_group",
    "normalize",
    "augment_intensity",
    "tta",
)
EXPERIMENT_LAYERS = "the experiment's own settings < flags typed"


@dataclasses.dataclass(frozen=True)
class Script:
    """What main_segmentation.py hands to `start`, by keyword: its parameter block, experiments,
    demo settings, comparisons, the experiments run by default, its subcommands and docstring."""

    parameters: dict
    experiments: dict
    demo: dict
    comparisons: list
    default_experiments: list
    commands: dict
    doc: str
    demo_experiments: dict


def start(
    argv,
    *,
    parameters,
    experiments,
    demo,
    comparisons,
    default_experiments=None,
    commands=None,
    doc="",
    demo_experiments=None,
):
    """Everything before the pipeline: the flags, the plan, checks of every parameter and of the
    data folder, then TensorFlow and the distribution strategy.

    Args:
        argv: the command line after the script's name.
        parameters: the script's PARAMETERS block (values; an edit differs from the lab default).
        experiments: {name: the parameters it changes}.
        demo: the settings of the synthetic demo, with `pairs`, the size of the generated set.
        comparisons: [(first, second, question)], the paired comparisons always made.
        default_experiments: the experiments run without --experiments (None: all).
        commands: {name: function}, the subcommands listed by --help.
        doc: the script's docstring (its first line and examples go into --help).
        demo_experiments: {name: demo settings of that experiment alone, on top of `demo`}.
    Returns:
        The `SegmentationRun` whose experiments the pipeline trains.
    """
    script = Script(
        parameters,
        experiments,
        demo,
        comparisons,
        list(default_experiments or experiments),
        commands or {},
        doc,
        demo_experiments or {},
    )
    args = parse_arguments(argv, script)
    flags = typed_flags(args, DECLARED)
    comparisons = [
        *check_names(script.comparisons, script.experiments, "the COMPARISONS block:"),
        *parse_compare(args.compare, script.experiments),
    ]
    plan = resume_plan(args, flags) if args.resume else new_plan(args.experiments, flags, script)
    for resolved in plan.values():
        check_parameters(resolved.values)
    print_parameters(plan, list(DECLARED))
    first = next(iter(plan.values())).values
    check_split(first, len(find_pairs(first["data_dir"])[0]))  # a wrong folder answers at once
    check_groups(first)
    if args.resume:  # the split is compared too once it is made; the files already here
        check_resume(checked_summary_folder(args.resume), pairs_record(first), compare_split=False)
    quiet_tensorflow()
    scaling = configure_scaling(
        first["strategy"], first["mixed_precision"], first["jit"], first["batch_size"]
    )
    from medlab.app.segmentation.run import SegmentationRun  # loads unet, and so TensorFlow

    return SegmentationRun(plan, comparisons, scaling, args.resume)


def parse_arguments(argv, script):
    demo = {k: v for k, v in script.demo.items() if k in DECLARED}
    # An experiment's own demo value is shown beside the demo's: "0.0007, 4d-dice: 0.00015".
    for name, settings in script.demo_experiments.items():
        for key, value in settings.items():
            demo[key] = f"{demo.get(key, DECLARED[key].default)}, {name}: {value}"
    parser = Parser(
        prog="main_segmentation.py",
        description=script.doc.split("\n")[0],
        epilog=epilog("main_segmentation.py", script.doc, script.commands, EXPERIMENT_LAYERS),
    )
    runs = parser.add_argument_group("experiments")
    default = script.default_experiments
    runs.add_argument(
        "--experiments",
        metavar="A,B,...",
        help=f"comma-separated experiments of {', '.join(script.experiments)} "
        f"(default: {', '.join(default)})",
    )
    runs.add_argument(
        "--compare",
        action="append",
        metavar="A:B",
        help="also compare experiment A with B "
        "on the same images (repeatable); the lab's comparisons are always made",
    )
    runs.add_argument(
        "--resume",
        metavar="SUMMARY_DIR",
        help="finish an interrupted invocation: "
        "completed experiments are kept, an interrupted one resumes from its last epoch",
    )
    add_parameter_flags(parser, DECLARED, demo)
    return parser.parse_args(argv)


def new_plan(names, flags, script):
    """{experiment: its `Resolved` parameters}: lab defaults < demo settings (synthetic data) <
    the edits in PARAMETERS < the experiment's own settings < the flags typed."""
    block, demo = script.parameters, script.demo
    seed = flags.get("seed", block.get("seed", DECLARED["seed"].default))
    data_dir, demo_settings = locate_data(
        flags.get("data_dir"),
        block.get("data_dir", DECLARED["data_dir"].default),
        lambda: synthetic_xrays(demo["pairs"], seed),
        f"{demo['pairs']} generated chest X-rays",
        {k: v for k, v in demo.items() if k != "pairs"},
        flags,
    )
    names = choose_experiments(names, script.experiments, script.default_experiments)
    own = {name: script.demo_experiments.get(name, {}) for name in names}
    if demo_settings:  # the generated set is where the data comes from
        demo_settings["data_dir"] = str(data_dir)
        for name, settings in own.items():
            if settings:
                shown = ", ".join(f"{k}={v}" for k, v in settings.items())
                print(f"demo settings of {name} alone: {shown} (main_segmentation.py says why)")
    return {
        name: resolve(
            DECLARED,
            block,
            flags,
            demo={**demo_settings, **own[name]} if demo_settings else demo_settings,
            experiment=script.experiments[name],
            where="PARAMETERS in main_segmentation.py",
        )
        for name in names
    }


def synthetic_xrays(count, seed):
    """The demo set, generated on first use; its progress bar starts TensorFlow, silenced here."""
    quiet_tensorflow()
    from medlab.synthetic import xray

    return xray.synthetic_xray_set(count=count, seed=seed)


def choose_experiments(names, experiments, default=None):
    """The experiments named in `names` (comma-separated), or `default` (all when None)."""
    if names is None:
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


def resume_plan(args, flags):
    """The saved plan of the summary folder being resumed; flags cannot change it midway."""
    given = [f"--{name.replace('_', '-')}" for name in flags] + (
        ["--experiments"] if args.experiments is not None else []
    )
    if given:
        raise UserError(
            f"--resume continues a run with the settings it started with, so {' '.join(given)} "
            "cannot be applied; drop them, or start a new run to change settings"
        )
    # Only read here: the lock is taken where the run's folders open, by the process that writes.
    folder = checked_summary_folder(args.resume)
    path = folder / "runs.json"
    required = set(DECLARED) - set(ADDED_PARAMETERS)
    try:
        plan = json.loads(path.read_text())
        if not plan or not all(isinstance(p, dict) and required <= set(p) for p in plan.values()):
            raise ValueError("no experiments, or parameters missing")
    except (ValueError, AttributeError) as error:
        raise UserError(
            f"{path} is damaged ({error}); start a new run, or restore the file "
            "(it lists each experiment's parameters)"
        ) from None
    for p in plan.values():
        check_saved_parameters(p, defaults(DECLARED), path)
    sources = saved_sources(folder)
    return {
        name: Resolved(
            {**defaults(DECLARED), **p},
            {key: sources.get(name, {}).get(key, "saved") for key in DECLARED},
            {},
        )
        for name, p in plan.items()
    }


def saved_sources(folder):
    """{experiment: {parameter: source}} as the resumed run recorded them (older runs: none)."""
    try:
        return json.loads((Path(folder) / SOURCES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def check_parameters(p):
    """Reject combinations of parameters that cannot train, before any work starts (each value
    on its own was checked against its declaration)."""
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
