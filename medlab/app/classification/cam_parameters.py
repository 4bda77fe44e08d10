"""The parameters of `cam_vgg16.py` (Task 3), each declared once: the lab's default (docs/lab.md,
Task 3), a help sentence, the help page's group, choices and range (`medlab.parameters.Param`).

The script's `PARAMETERS` block holds the values a user edits; a value there that differs from the
default declared here is an edit (and then beats the synthetic demo's settings).
"""

from medlab.distribute import SCALING
from medlab.parameters import SEED_RANGE, Param
from medlab.schedules import SCHEDULES

DATASETS = ("bone", "skin")
# medlab.classification.vgg.POOLING implements max and avg (and flatten, the lab's); named here so
# that `--help` answers without starting TensorFlow (tests/test_cam_vgg16.py checks they agree).
POOLINGS = ("flatten", "max", "avg")
CLASS_WEIGHTS = ("none", "balanced")  # medlab.classification.train.class_weights

DECLARED = {
    "dataset": Param(
        "bone",
        "bone (AFF/NFF) or skin (Mel/Nevi): data/Bone or data/Skin, else a generated look-alike",
        "data",
        choices=DATASETS,
    ),
    "data_dir": Param(
        "",
        "a two-class image folder in the lab layout (Set/{train,validation}/{A,B}/) or flat "
        "(Set/{A,B}/) (empty: --dataset); wins over --dataset",
        "data",
    ),
    "shortcut": Param(
        False, "the synthetic set with a text marker that gives the class away", "data"
    ),
    "size": Param(128, "input height and width in pixels (five 2x2 poolings)", "model", 32),
    "channels": Param(1, "1 (grayscale) or 3 (RGB) input channels", "model", choices=(1, 3)),
    "base": Param(8, "filters of the first VGG block (then 2x, 4x, 8x, 8x)", "model", 1),
    "centre": Param(
        False,
        "pixels [0, 1] -> [-2, 2] inside the model (not in the lab's, which takes [0, 1]; "
        "--preset recommended sets it)",
        "model",
    ),
    "colour_constancy": Param(
        False,
        "a shades-of-grey layer first in the model: one light for all photos (RGB only)",
        "model",
    ),
    "batch_norm": Param(
        False, "batch normalisation after every convolution (not in the lab's model)", "model"
    ),
    "pooling": Param(
        "flatten",
        "top of the convolutions: flatten (the lab's), or max or avg global pooling",
        "model",
        choices=POOLINGS,
    ),
    "dropout": Param(
        0.4,
        "dropout after each of the 3 Dense(64) layers (0: none)",
        "model",
        0,
        1,
        high_open=True,
    ),
    "epochs": Param(80, "training epochs", "training", 1),
    "lr": Param(1e-5, "Adam learning rate", "training", 1e-12),
    "lr_schedule": Param(
        "constant", "constant, or cosine: decays to 0 over the run", "training", choices=SCHEDULES
    ),
    "batch_size": Param(8, "images per training step, per replica", "training", 1),
    "class_weight": Param(
        "none",
        "none, or balanced: each class weighs n / (2 n_class) in the loss (imbalanced sets)",
        "training",
        choices=CLASS_WEIGHTS,
    ),
    "seed": Param(
        0, "seed of the split, the weights and the augmentation", "training", *SEED_RANGE
    ),
    "rotation": Param(
        10.0, "training augmentation: random rotation in degrees", "training", 0, 180
    ),
    "shift": Param(
        0.1,
        "training augmentation: random shift, a fraction of width and height",
        "training",
        0,
        1,
        high_open=True,
    ),
    "zoom": Param(
        0.0,
        "training augmentation: scale in [1 - ZOOM, 1 + ZOOM] (the lab's Task 3 had none)",
        "training",
        0,
        1,
        high_open=True,
    ),
    "flip": Param(True, "training augmentation: random horizontal flip", "training"),
    "colour_jitter": Param(
        0.0,
        "training augmentation: random brightness, contrast and (RGB) tint of this strength",
        "training",
        0,
        1,
        high_open=True,
    ),
    "layer": Param(
        None,
        "layer to explain (default: Last_ConvLayer, or the last convolution)",
        "evaluation",
        type=str,
    ),
    "target_class": Param(
        None,
        "class index to explain, 0 or 1 (default: each image's predicted class)",
        "evaluation",
        0,
        1,
        type=int,
        flag="--class",
    ),
    "grid_images": Param(12, "validation images shown in cam_grid.png", "evaluation", 1),
    "sanity_images": Param(16, "validation images used by the sanity checks", "evaluation", 1),
    "out": Param("results/cam", "folder that receives one new folder per run", "output"),
    **SCALING,
}
