"""The parameters of `transfer_vgg16.py` (Tasks 1-2), each declared once: the lab's default, a help
sentence, the help page's group, choices and range (`medlab.parameters.Param`).

The script's `PARAMETERS` block holds the values a user edits; a value there that differs from the
default declared here is an edit (and then beats the synthetic demo's settings).
"""

from medlab.app.classification.cam_parameters import CLASS_WEIGHTS, DATASETS, POOLINGS
from medlab.distribute import SCALING
from medlab.parameters import SEED_RANGE, Param
from medlab.schedules import SCHEDULES

# medlab.classification.transfer implements both (`cached_features`).
PREPROCESSING = ("vgg16", "rescale")
LEARNING_RATE = dict(low=1e-12, hint=": a learning rate must be positive")

DECLARED = {
    "dataset": Param(
        "skin",
        "skin (Mel/Nevi) or bone (AFF/NFF): data/Skin or data/Bone, else a generated look-alike",
        "data",
        choices=DATASETS,
    ),
    "data_dir": Param(
        "",
        "your folder Set/{train,validation}/{A,B}/ or Set/{A,B}/ (empty: --dataset); wins over "
        "--dataset",
        "data",
    ),
    "val_fraction": Param(
        0.2,
        "validation share of a flat Set/{A,B}/ folder (stratified, seeded split)",
        "data",
        0.01,
        1,
        high_open=True,
    ),
    "folds": Param(
        0,
        "stratified K-fold cross-validation on train+validation (0 = the split; K >= 2)",
        "data",
        low=0,
    ),
    "cache_dir": Param(
        "data/cache/vgg16-features", "folder of the cached VGG16 features (reused)", "data"
    ),
    "weights": Param(
        "imagenet",
        "imagenet, none (a random VGG16: smoke tests only) or the path of a VGG16 notop "
        ".h5, .weights.h5 or .keras file",
        "model",
    ),
    "preprocess": Param(
        "vgg16",
        "vgg16 (vgg16.preprocess_input) or rescale (the handout's 1/255)",
        "model",
        choices=PREPROCESSING,
    ),
    "feature_precision": Param(
        "float32",
        "precision the frozen VGG16 computes the features in: float32, or bfloat16 (needs a GPU "
        "or a CPU with AVX512-BF16/AMX; about 2x faster there, features cast to float32 before "
        "the cache, docs/benchmarks.md)",
        "model",
        choices=("float32", "bfloat16"),
    ),
    "image_size": Param(
        224, "backbone input; features are (SIZE/32) x (SIZE/32) x 512", "model", 32
    ),
    "dense_units": Param(
        128, "head: Flatten -> Dense(UNITS, relu) -> Dropout -> Dense(1, sigmoid)", "model", 1
    ),
    "dropout": Param(0.5, "dropout rate of the head", "model", 0, 1, high_open=True),
    "scratch_size": Param(
        128,
        "input size of the from-scratch VGG16-style model (Lab 2 task 7a), a multiple of 32",
        "model",
        32,
    ),
    "scratch_channels": Param(
        1,
        "input channels of the from-scratch model: 1 (grayscale, the lab's) or 3 (--preset "
        "recommended)",
        "model",
        choices=(1, 3),
    ),
    "scratch_base": Param(8, "filters of the from-scratch model's first block", "model", 1),
    "scratch_centre": Param(
        False,
        "from-scratch model: pixels [0, 1] -> [-2, 2] inside the model; without batch norm the "
        "plain VGG otherwise stalls at loss 0.693 (the lab's takes [0, 1]; --preset recommended "
        "sets it)",
        "model",
    ),
    "scratch_batch_norm": Param(
        False,
        "from-scratch model: batch normalisation after each convolution (not in the lab's)",
        "model",
    ),
    "scratch_pooling": Param(
        "flatten",
        "from-scratch model's top: flatten (the lab's), or max or avg global pooling",
        "model",
        choices=POOLINGS,
    ),
    "scratch_dropout": Param(
        0.4,
        "from-scratch model: dropout after each of its 3 Dense(64) layers",
        "model",
        0,
        1,
        high_open=True,
    ),
    "epochs": Param(
        150, "training epochs of the head (and of the from-scratch model)", "training", 1
    ),
    "lr": Param(1e-5, "Adam learning rate of the head", "training", **LEARNING_RATE),
    "batch_size": Param(8, "images per training step, per replica", "training", 1),
    "scratch_lr": Param(
        1e-5, "Adam learning rate of the from-scratch model", "training", **LEARNING_RATE
    ),
    "scratch_lr_schedule": Param(
        "constant",
        "from-scratch model: constant, or cosine (decays to 0 over its run)",
        "training",
        choices=SCHEDULES,
    ),
    "scratch_epochs": Param(
        0, "epochs of the from-scratch model (0: the same as --epochs)", "training", 0
    ),
    "scratch_batch_size": Param(
        0, "batch of the from-scratch model (0: the same as --batch-size)", "training", 0
    ),
    "class_weight": Param(
        "none",
        "none, or balanced: classes weigh alike in the loss (head and from-scratch model)",
        "training",
        choices=CLASS_WEIGHTS,
    ),
    "augment": Param(
        False,
        "training-time rotation, shift, zoom and flip for the from-scratch model",
        "training",
    ),
    "seed": Param(0, "seed of the split, the weights and the shuffling", "training", *SEED_RANGE),
    "seeds": Param(
        1, "repeat every training with seeds SEED, SEED+1, ... (spread over runs)", "training", 1
    ),
    "positive": Param(
        "auto",
        "class counted as positive for sensitivity; auto: Mel or AFF, else label 1",
        "evaluation",
    ),
    "bootstrap": Param(
        2000, "bootstrap resamples of the 95% confidence intervals", "evaluation", 100
    ),
    "out": Param("results/transfer", "folder that receives one new folder per run", "output"),
    **SCALING,
}
