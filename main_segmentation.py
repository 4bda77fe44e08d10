"""Task 4: U-Net lung segmentation of chest X-rays, experiments 4a-4e and the recipe `best`.

    python main_segmentation.py                         # experiments 4a-4e (synthetic if no data)
    python main_segmentation.py --data-dir data/X_ray --experiments best   # the real-data recipe
    python main_segmentation.py --folds 5 --experiments 4a,4e-dice --compare 4a:4e-dice

Parameters: edit a value in PARAMETERS below, or type its flag (`--help` explains each one). Each
run takes every value from the last of these that sets it, and prints them in a table with their
sources (also in summary.md):

    lab defaults < demo settings (synthetic data only) < your edits in PARAMETERS
        < the experiment's own settings < flags typed

A value in PARAMETERS that differs from the lab default (declared, with its help and range, in
medlab/app/segmentation/parameters.py) is an edit: the synthetic demo never replaces it. An
experiment that sets the same parameter (every one sets `loss`) still wins; the table then shows
the edit as overridden. docs/parameters.md says more.

`train` below is the whole pipeline, in the order it runs; the functions it calls are
in `unet.py`. The command line, run folders, resume, folds and the summary are
`medlab.app.segmentation`'s, so that this file shows the method.
"""

from medlab.app import segmentation as segmentation_app
from medlab.app.runs import run_commands, set_seed

# Your values; the lab's are the defaults, so an unchanged line is not an edit.
PARAMETERS = {
    # data
    "data_dir": "data/X_ray",
    "val_fraction": 0.2,
    "folds": 0,
    "groups": "none",
    "holdout_group": "",
    "cache": "auto",
    "memory_budget_gb": 4.0,
    # model
    "size": 256,
    "base": 8,
    "depth": 4,
    "dropout": 0.0,
    "batch_norm": False,
    "normalize": "none",
    # training
    "loss": "bce",
    "augment": False,
    "augment_intensity": False,
    "batch_size": 8,
    "lr": 1e-4,
    "lr_schedule": "constant",
    "epochs": 150,
    "seed": 42,
    # evaluation and output
    "postprocess": False,
    "tta": False,
    "out": "results/segmentation",
    # scaling (docs/scaling.md): batch_size above is per replica
    "strategy": "auto",
    "mixed_precision": "off",
    "jit": None,  # None: compiled on JAX, not on TensorFlow (docs/scaling.md)
}

# Each experiment is the parameters it changes from the block above.
EXPERIMENTS = {
    "4a": {"loss": "bce"},  # the baseline: binary cross-entropy, base 8, no regularisation
    "4b": {"loss": "dice"},  # the same U-Net trained on soft Dice loss
    "4c-bce": {"loss": "bce", "dropout": 0.2},  # does dropout help?
    "4c-dice": {"loss": "dice", "dropout": 0.2},
    "4d-bce": {"loss": "bce", "dropout": 0.2, "base": 32},  # four times the filters of 4c
    "4d-dice": {"loss": "dice", "dropout": 0.2, "base": 32},
    # batch norm and joint augmentation of image and mask, at twice 4c's filters
    "4e-bce": {"loss": "bce", "dropout": 0.2, "base": 16, "batch_norm": True, "augment": True},
    "4e-dice": {"loss": "dice", "dropout": 0.2, "base": 16, "batch_norm": True, "augment": True},
    # The recipe for real chest X-rays: nnU-Net's defaults that pay for themselves on a CPU,
    # chosen on a source it is not scored on (docs/validation.md): each image standardised, joint
    # geometric and image-only intensity augmentation, BCE + Dice, batches of 4 (twice the steps
    # for the same CPU time), a cosine decay to 0 over 100 epochs (12.6 to 17.2 minutes on 2 cores),
    # mirrored test-time augmentation and the two largest lung regions kept.
    "best": {
        "normalize": "image",
        "loss": "bce_dice",
        "augment": True,
        "augment_intensity": True,
        "batch_size": 4,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "epochs": 100,
        "postprocess": True,
        "tta": True,
    },
    # The earlier recipe, chosen on one validation split (docs/real-data.md); it did not carry
    # over to another hospital's films (docs/validation.md).
    "split-tuned": {
        "loss": "bce_dice",
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "epochs": 100,
        "postprocess": True,
    },
}

# The lab's questions, as paired comparisons (first, second, question) on the same validation
# images: each gets a per-image difference with a 95% interval, a p-value, a verdict and overlaid
# learning curves. Add your own here or with --compare A:B; pairs not run are skipped with a note.
COMPARISONS = [
    ("4a", "4b", "BCE vs Dice loss"),
    ("4c-bce", "4a", "dropout 0.2 vs none (BCE)"),
    ("4c-dice", "4b", "dropout 0.2 vs none (Dice)"),
    ("4d-bce", "4c-bce", "capacity: base 32 vs 8 (BCE)"),
    ("4d-dice", "4c-dice", "capacity: base 32 vs 8 (Dice)"),
    ("4e-bce", "4c-bce", "batch norm + augmentation, base 16 (BCE)"),
    ("4e-dice", "4c-dice", "batch norm + augmentation, base 16 (Dice)"),
]
# Run when --experiments is not given: the lab's experiments; the recipes are asked for by name.
DEFAULT_EXPERIMENTS = [name for name in EXPERIMENTS if name[0].isdigit()]

# With no data, a built-in synthetic set of `pairs` X-rays is generated and these settings replace
# the lab defaults (not your edits above, nor flags), so that every experiment learns and the
# whole demo takes under 10 minutes on 2 CPU cores (bench/demo_segmentation.py checks both, at two
# seeds). 48 px is about half the arithmetic of 64 px; at 48 px and Adam 7e-4, Dice loss with
# dropout (4c-dice) collapsed to the empty mask at seed 42, so the demo's rate is 4e-4.
SYNTHETIC_DEMO = {"pairs": 100, "size": 48, "batch_size": 4, "epochs": 16, "lr": 4e-4}
# The demo settings of single experiments, on top of SYNTHETIC_DEMO (the banner and the table say
# them). Dice loss at base 32 collapsed to the empty mask at 7e-4 (seed 42) and at 3e-4 (seed 1):
# Adam moves a network four times wider about four times as far per step, and Dice's gradient
# vanishes once the sigmoid saturates. At 1.5e-4 it learns at both seeds in the same 16 epochs.
SYNTHETIC_DEMO_EXPERIMENTS = {"4d-dice": {"lr": 1.5e-4}}
LOWER_ON_OUT_OF_MEMORY = "--batch-size, --size or --base"  # what to lower when memory runs out


def main(argv=None):
    """Train and score experiments, or `predict` / `evaluate` with a saved model."""
    return run_commands(argv, {"train": train, **COMMANDS}, lower=LOWER_ON_OUT_OF_MEMORY)


def train(argv):
    """Load and split the pairs, then build, compile, train, evaluate and save each experiment."""
    # The flags, the plan (each experiment's parameters, printed with their sources) and every
    # check that can fail before TensorFlow starts.
    run = segmentation_app.start(
        argv,
        parameters=PARAMETERS,
        experiments=EXPERIMENTS,
        demo=SYNTHETIC_DEMO,
        demo_experiments=SYNTHETIC_DEMO_EXPERIMENTS,
        comparisons=COMPARISONS,
        default_experiments=DEFAULT_EXPERIMENTS,
        commands=COMMANDS,
        doc=__doc__,
    )
    import unet  # TensorFlow starts here, so --help and mistyped flags or folders answer at once

    # Every pair is decoded once here (a bad file stops the run before any folder is made); with
    # --cache none or disk only the file paths are kept, and the pairs are decoded while training.
    pairs = unet.load_every_pair(
        run.first["data_dir"], run.first["size"], run.first["cache"], run.first["memory_budget_gb"]
    )
    # One experiment at a time (one fold at a time with --folds).
    for experiment in run.open_folders(pairs):
        if run.is_complete(experiment):  # --resume: an earlier invocation finished it
            continue
        run.make_folder(experiment)
        params = experiment.parameters
        set_seed(params["seed"])
        data = unet.split_pairs(pairs, *experiment.split)
        train_data, val_data = unet.experiment_datasets(
            params, data, run.batch_size(experiment), experiment.cache_dir
        )
        steps = params["epochs"] * int(train_data.cardinality())
        learning_rate = unet.learning_rate(params["lr"], params["lr_schedule"], steps)
        # The model's variables on every replica of the strategy, and its data spread over them
        with run.scaling.scope():
            model = unet.build_unet(
                (params["size"], params["size"], 1),
                params["base"],
                params["depth"],
                params["dropout"],
                params["batch_norm"],
                params["normalize"],
            )
            unet.compile_unet(model, params["loss"], learning_rate, jit_compile=run.scaling.jit)
            seconds = unet.train(
                model,
                train_data,
                val_data,
                params["epochs"],
                experiment.folder,
                run.callbacks(experiment),
            )
        scores, shown = unet.evaluate_batches(
            model, val_data, postprocess=params["postprocess"], tta=params["tta"]
        )
        run.save(experiment, model, val_data, seconds, scores, shown)
    run.finish()  # folds pooled, summary.md with every experiment and the comparisons


def predict(argv):
    """binary lung masks and overlays of new images with a saved model.keras"""
    return segmentation_app.predict_command(argv, PARAMETERS)


def evaluate(argv):
    """a saved model.keras scored on a folder of Image/ and Mask/ pairs"""
    return segmentation_app.evaluate_command(argv, PARAMETERS)


COMMANDS = {"predict": predict, "evaluate": evaluate}


if __name__ == "__main__":
    main()
