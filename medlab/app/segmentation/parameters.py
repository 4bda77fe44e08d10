"""The parameters of `main_segmentation.py`, each declared once: the lab's default, a help
sentence, the help page's group, choices and range (`medlab.parameters.Param`).

The script's `PARAMETERS` block holds the values a user edits; a value there that differs from the
default declared here is an edit (and then beats the synthetic demo's settings).
"""

from medlab.distribute import SCALING
from medlab.parameters import SEED_RANGE, Param
from medlab.schedules import SCHEDULES

# unet.LOSSES and unet.choose_cache implement these; named here so that `--help` answers without
# starting TensorFlow (tests/test_main_segmentation.py checks that the two agree).
LOSS_NAMES = ("bce", "dice", "bce_dice")
NORMALIZATIONS = ("none", "image")
CACHE_MODES = ("auto", "memory", "disk", "none")

# predict and evaluate take the same flag, without the training run's second set of scores
POSTPROCESS_HELP = (
    "keep the two largest connected regions of each predicted mask and fill their holes"
)

DECLARED = {
    "data_dir": Param(
        "data/X_ray",
        "folder with Image/ and Mask/ subfolders whose files share names; the synthetic demo set "
        "is generated when it does not exist",
        "data",
    ),
    "val_fraction": Param(
        0.2, "share of the pairs held out for validation (one seeded split)", "data", 0.01, 0.9
    ),
    "folds": Param(
        0,
        "K-fold cross-validation over all pairs (0 = the --val-fraction split); every image is "
        "scored once, by the fold model that did not see it",
        "data",
        low=0,
    ),
    "groups": Param(
        "none",
        "what group (hospital, scanner, data set) each pair comes from, for splits that keep a "
        "group on one side: none, prefix (the file name up to its first _, CHNCXR_0001.png -> "
        "CHNCXR) or a CSV file with the columns image,group; with --folds K, each fold holds out "
        "whole groups (docs/validation.md)",
        "data",
    ),
    "holdout_group": Param(
        "",
        "with --groups: validate on every pair of this group and train on the others "
        "(leave-one-group-out), instead of the --val-fraction split",
        "data",
    ),
    "cache": Param(
        "auto",
        "auto (memory when preloading fits --memory-budget-gb, else none), memory (decode all "
        "pairs once), disk (decode while training, cache to a file) or none (decode every epoch)",
        "data",
        choices=CACHE_MODES,
    ),
    "memory_budget_gb": Param(
        4.0, "memory the decoded data set may use before --cache auto streams it", "data", 0.01
    ),
    "size": Param(256, "images and masks are resized to SIZE x SIZE, one channel", "model", 1),
    "base": Param(
        8, "filters of the first U-Net level (then 2x, 4x, 8x, bottleneck 16x)", "model", 1
    ),
    "depth": Param(4, "number of U-Net levels; SIZE must be divisible by 2**DEPTH", "model", 1),
    "dropout": Param(
        0.0,
        "dropout rate after every pooling and skip concatenation (0 = none)",
        "model",
        0,
        1,
        high_open=True,
    ),
    "batch_norm": Param(
        False, "batch normalisation between each convolution and its ReLU", "model"
    ),
    "normalize": Param(
        "none",
        "input normalisation inside the model: none (pixels in [0, 1] as loaded) or image (each "
        "image to zero mean and unit variance, so that films of another exposure look alike)",
        "model",
        choices=NORMALIZATIONS,
    ),
    "loss": Param(
        "bce",
        "training loss: bce (binary cross-entropy), dice (soft Dice) or bce_dice (their sum)",
        "training",
        choices=LOSS_NAMES,
    ),
    "augment": Param(
        False,
        "joint random rotation 10 deg, shift 0.1, zoom 0.2 and flip of image and mask",
        "training",
    ),
    "augment_intensity": Param(
        False,
        "random gamma, contrast, brightness, blur or sharpening and noise of each training image "
        "(never its mask), as films of other hospitals differ (medlab/augment.py)",
        "training",
    ),
    "batch_size": Param(8, "pairs per training step, per replica", "training", 1),
    "lr": Param(1e-4, "Adam learning rate", "training", 1e-12),
    "lr_schedule": Param(
        "constant",
        "constant, or cosine: decays from --lr to 0 over the run",
        "training",
        choices=SCHEDULES,
    ),
    "epochs": Param(
        150, "training epochs per experiment", "training", 1, hint="; train for at least one epoch"
    ),
    "seed": Param(
        42,
        "seed of the split, the weights, the shuffling and the augmentation",
        "training",
        *SEED_RANGE,
    ),
    "postprocess": Param(
        False,
        f"{POSTPROCESS_HELP} (metrics.json also reports the scores without it)",
        "evaluation",
    ),
    "tta": Param(
        False,
        "mirrored test-time augmentation: each validation image's probabilities averaged with "
        "those of its left-right mirror image; predict and evaluate then use it too",
        "evaluation",
    ),
    "out": Param("results/segmentation", "folder that receives one new folder per run", "output"),
    **SCALING,
}
