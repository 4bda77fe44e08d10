"""Task 4: U-Net lung segmentation of chest X-rays, experiments 4a-4e and the recipe `best`.

    python main_segmentation.py                         # experiments 4a-4e (synthetic if no data)
    python main_segmentation.py --data-dir data/X_ray --experiments best   # the real-data recipe
    python main_segmentation.py --data-dir data/X_ray --experiments 4a,4e-dice --epochs 50
    python main_segmentation.py --folds 5 --experiments 4a,4e-dice --compare 4a:4e-dice
    python main_segmentation.py predict MODEL.keras IMAGE...   # masks for new images
    python main_segmentation.py evaluate MODEL.keras --data-dir DIR   # scores on a folder of pairs

Edit the parameters below or override any of them with a flag (`--help` lists them). Precedence:
the defaults < an experiment's own settings < flags given on the command line.

`train_experiments` below is the whole pipeline, in the order it runs; the functions it calls are
in `unet.py`. The command line, run folders, resume, folds and the summary are
`medlab.app.segmentation`'s, so that this file shows the method.
"""

import functools

from medlab.app import segmentation as segmentation_app
from medlab.app.runs import run_commands
from medlab.lazy import lazy_import

# TensorFlow starts on first use of unet, so --help and mistyped flags answer at once.
unet = lazy_import("unet")

PARAMETERS = {
    "data_dir": "data/X_ray",  # X_ray/{Image,Mask}/ with identical file names
    "size": 256,  # images are resized to size x size, one channel
    "base": 8,  # filters of the first U-Net level (then 2x, 4x, 8x, bottleneck 16x)
    "depth": 4,  # U-Net levels; size must be divisible by 2**depth
    "dropout": 0.0,  # rate after every pooling and skip concatenation (0 = none)
    "batch_norm": False,
    "augment": False,  # joint rotation 10, shift 0.1, zoom 0.2, flip of image and mask
    "loss": "bce",  # bce or dice
    "batch_size": 8,
    "lr": 1e-4,
    "epochs": 150,
    "val_fraction": 0.2,  # the same seeded split for every experiment
    "folds": 0,  # K >= 2: K-fold cross-validation over all pairs instead of the split
    "groups": "none",  # none, prefix (CHNCXR_0001.png -> CHNCXR) or a CSV file of image,group
    "holdout_group": "",  # with groups: validate on this group, train on the others
    "seed": 42,
    "out": "results/segmentation",
    # Scaling (README, "Scaling"): batch_size above is per replica; the global batch is printed.
    "cache": "auto",  # memory, disk or none; auto preloads when it fits the budget below
    "memory_budget_gb": 4.0,
    "strategy": "auto",  # auto, default, mirrored (all local GPUs) or multiworker (TF_CONFIG)
    "mixed_precision": "off",  # off, float16 (GPU) or bfloat16
    "jit": False,  # XLA compilation of the training step
    "lr_schedule": "constant",  # constant, or cosine: decays from lr to 0 over the run
    "postprocess": False,  # keep the two largest regions of each predicted mask, holes filled
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
    # What measurably helped on real chest X-rays (README, Task 4, "Real chest X-rays"); batch norm,
    # augmentation and base 16 did not, within 15 CPU minutes, so best leaves them out.
    "best": {
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
# Run when --experiments is not given: the lab's experiments; `best` is asked for by name.
DEFAULT_EXPERIMENTS = [name for name in EXPERIMENTS if name != "best"]

# With no data, a built-in synthetic set is generated and these demo settings replace the
# defaults above (flags still win), so the whole demo finishes in minutes on a laptop CPU.
SYNTHETIC_DEMO = {"pairs": 100, "size": 64, "batch_size": 4, "epochs": 16, "lr": 7e-4}


def main(argv=None):
    """Train and score experiments, or `predict` / `evaluate` with a saved model."""
    return run_commands(
        argv,
        {
            "train": train_experiments,
            "predict": functools.partial(segmentation_app.predict_command, parameters=PARAMETERS),
            "evaluate": functools.partial(segmentation_app.evaluate_command, parameters=PARAMETERS),
        },
        lower="--batch-size, --size or --base",
    )


def train_experiments(argv):
    """Load and split the pairs, then build, compile, train, evaluate and save each experiment."""
    run = segmentation_app.start(
        argv, PARAMETERS, EXPERIMENTS, SYNTHETIC_DEMO, COMPARISONS, DEFAULT_EXPERIMENTS
    )
    # Every pair is decoded once here (a bad file stops the run before any folder is made); with
    # --cache none or disk only the file paths are kept, and the pairs are decoded while training.
    first = run.first
    pairs = unet.load_every_pair(
        first["data_dir"], first["size"], first["cache"], first["memory_budget_gb"]
    )
    # One experiment at a time (one fold at a time with --folds); complete ones are skipped.
    for experiment in run.pending(pairs):
        p = experiment.parameters
        data = unet.split_pairs(pairs, *experiment.split)
        train_data, val_data = unet.experiment_datasets(
            p, data, run.batch_size(experiment), experiment.cache_dir
        )
        steps = p["epochs"] * int(train_data.cardinality())
        with run.scaling.scope():  # the model's variables on every replica of the strategy
            model = unet.build_unet(
                (p["size"], p["size"], 1), p["base"], p["depth"], p["dropout"], p["batch_norm"]
            )
            unet.compile_unet(
                model,
                p["loss"],
                unet.learning_rate(p["lr"], p["lr_schedule"], steps),
                jit_compile=run.scaling.jit,
            )
        seconds = unet.train(
            model, train_data, val_data, p["epochs"], experiment.folder, run.callbacks(experiment)
        )
        scores, shown = unet.evaluate_batches(model, val_data, postprocess=p["postprocess"])
        run.save(experiment, model, val_data, seconds, scores, shown)
    run.finish()


if __name__ == "__main__":
    main()
