"""Lab 4, Tasks 1-2: transfer learning with a frozen ImageNet VGG16 vs training from scratch.

    python transfer_vgg16.py --dataset skin  # data/Skin, or a synthetic demo set if absent
    python transfer_vgg16.py --data-dir PATH --weights PATH/vgg16_notop.h5 --folds 5
    python transfer_vgg16.py predict MODEL.keras IMAGE...

VGG16's convolutional base turns every image into a 7x7x512 feature map once (cached on disk);
only a small head is trained on those features. The lab's from-scratch VGG16-style model is
trained on the same split for the same number of epochs, and both are scored on the same
validation images with bootstrap confidence intervals, so the comparison says whether the
difference is larger than the noise. Edit the parameters below or override any with a flag.
"""

import hashlib
import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medlab import quiet_tensorflow
from medlab.app.runs import (  # light imports: TensorFlow loads only when needed
    UserError,
    main_guard,
)
from medlab.classification.metrics import positive_label
from medlab.distribute import SCALING_HELP, SCALING_PARAMETERS

PARAMETERS = {
    "dataset": "skin",  # skin or bone: data/Skin or data/Bone (synthetic demo when absent)
    "data_dir": "",  # any folder Set/{train,validation}/{A,B}/ or Set/{A,B}/; wins over --dataset
    "weights": "imagenet",  # imagenet, none (random: smoke tests only) or a VGG16 notop file
    "preprocess": "vgg16",  # vgg16: vgg16.preprocess_input; rescale: the handout's 1/255
    "image_size": 224,  # backbone input; features are (size/32) x (size/32) x 512
    "epochs": 150,  # for the head and for the from-scratch model alike
    "lr": 1e-5,  # Adam learning rate of the head
    "batch_size": 8,
    "dense_units": 128,  # head: Flatten -> Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid)
    "dropout": 0.5,
    "scratch_size": 128,  # from-scratch VGG16-style model (Lab 2 task 7a): input size,
    "scratch_channels": 3,  #   channels (1 = grayscale as in the lab's Task 3),
    "scratch_base": 8,  #   filters of the first block
    "scratch_lr": 1e-5,
    "scratch_centre": True,  #   pixels [0, 1] -> [-2, 2] inside the model (False: the lab's [0, 1])
    "scratch_batch_norm": False,  # BatchNormalization after each convolution (not in the lab's)
    "scratch_pooling": "flatten",  # flatten (lab's), max or avg: global pooling instead of Flatten
    "scratch_dropout": 0.4,  #   after each of its 3 Dense(64) layers
    "scratch_lr_schedule": "constant",  # or cosine: decays to 0 over the run
    "scratch_epochs": 0,  #   0: the same as --epochs
    "scratch_batch_size": 0,  #   0: the same as --batch-size
    "class_weight": "none",  # none or balanced (classes weigh alike in the loss): head and scratch
    "augment": False,  # train-time rotation/shift/zoom/flip for the from-scratch model
    "folds": 0,  # K >= 2: stratified K-fold cross-validation on train+validation
    "seeds": 1,  # repeat every training with seeds seed, seed+1, ...
    "seed": 0,
    "val_fraction": 0.2,  # only for a flat Set/{A,B}/ folder: stratified seeded split
    "positive": "auto",  # class counted as positive for sensitivity; auto: Mel/AFF, else label 1
    "bootstrap": 2000,  # resamples for the 95% confidence intervals
    "cache_dir": "data/cache/vgg16-features",
    "out": "results/transfer",
    **SCALING_PARAMETERS,  # strategy, mixed_precision, jit (README); batch_size is per replica
}

HELP = {
    "dataset": "skin or bone",
    "data_dir": "data folder in the lab layout",
    "weights": "imagenet, none, or a path to a VGG16 notop .h5/.weights.h5 file",
    "preprocess": "vgg16 or rescale",
    "folds": "K-fold cross-validation (0 = use the split)",
    "seeds": "number of repeats with different seeds",
    "positive": "positive class name",
    "scratch_pooling": "flatten, max or avg",
    "scratch_lr_schedule": "constant or cosine",
    "scratch_epochs": "epochs of the from-scratch model (0: --epochs)",
    "class_weight": "none or balanced",
    "scratch_batch_size": "batch size of the from-scratch model (0: --batch-size)",
    **SCALING_HELP,
}

# Without data, a generated set replaces data/Skin or data/Bone, and these settings replace the
# defaults above (flags still win) so that the demo finishes in minutes on a laptop CPU.
SYNTHETIC_DEMO = {
    "image_size": 128,
    "epochs": 30,
    "lr": 1e-4,
    "scratch_size": 64,
    "scratch_lr": 1e-4,
}
# Named settings for the from-scratch model and the class weights (--preset; over the demo
# settings, under the flags), as in cam_vgg16.py: "lab" is the handout's Lab 2 model exactly ([0, 1]
# pixels without the centring layer, one channel, lr 1e-5, the lab's epochs), "recommended" what
# learnt best on real data (README, Tasks 1-2).
PRESETS = {
    "lab": {
        "scratch_size": 128,
        "scratch_channels": 1,
        "scratch_base": 8,
        "scratch_lr": 1e-5,
        "scratch_centre": False,
        "scratch_batch_norm": False,
        "scratch_pooling": "flatten",
        "scratch_dropout": 0.4,
        "scratch_lr_schedule": "constant",
        "scratch_epochs": 0,
        "scratch_batch_size": 0,
        "augment": False,
        "class_weight": "none",
    },
    "recommended": {
        "scratch_lr": 1e-3,
        "scratch_batch_norm": True,
        "scratch_pooling": "avg",
        "scratch_dropout": 0.0,
        "scratch_lr_schedule": "cosine",
        "scratch_epochs": 40,
        "scratch_batch_size": 32,
        "augment": True,
        "class_weight": "balanced",
    },
}

DATASETS = {"skin": "data/Skin", "bone": "data/Bone"}
METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
THRESHOLD = 0.5
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# ImageNet means in BGR order, as keras.applications.vgg16.preprocess_input subtracts them.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
CACHE_VERSION = 1


# ----------------------------------------------------------------------------- backbone


def keras_cache_file():
    import os

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / IMAGENET_FILE


def load_backbone(weights, image_size):
    """VGG16's convolutional base with `weights` (imagenet, none or a file), frozen."""
    import keras

    shape = (image_size, image_size, 3)
    if weights == "none":
        backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    elif weights == "imagenet":
        backbone = download_imagenet_backbone(shape)
    else:
        backbone = backbone_from_file(Path(weights), shape)
    backbone.trainable = False
    return backbone


def download_imagenet_backbone(shape):
    import keras

    try:
        return keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as error:  # any failed download or check: never continue with other weights
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise UserError(
            f"cannot get the ImageNet VGG16 weights ({reason}); on a machine without "
            f"internet copy {IMAGENET_FILE} to {keras_cache_file()} or pass "
            "--weights PATH (a local VGG16 notop weights file), or --weights none "
            "for a smoke test"
        ) from None


def backbone_from_file(path, shape):
    import keras

    if path.is_dir():
        raise UserError(
            f"--weights {path} is a folder; pass the weights file inside it, such as "
            f"{path / IMAGENET_FILE}, or --weights imagenet or none"
        )
    if not path.is_file():
        raise UserError(
            f"weights file {path} does not exist; pass --weights imagenet, none, or the "
            f"path of a VGG16 notop weights file such as {IMAGENET_FILE}"
        )
    if not path.name.endswith((".h5", ".hdf5", ".keras")):
        raise UserError(f"weights file {path} must be a Keras .h5, .weights.h5 or .keras file")
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    kernels = {
        layer.name: layer.kernel.numpy() for layer in backbone.layers if hasattr(layer, "kernel")
    }
    reason = ""
    try:
        with warnings.catch_warnings():  # Keras only warns about parts it skips: checked below
            warnings.simplefilter("ignore")
            backbone.load_weights(str(path))
    except Exception as error:
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    # A layer whose kernel still equals its random start was not loaded:
    # refuse, never run half-random.
    unloaded = [
        name
        for name, kernel in kernels.items()
        if np.array_equal(backbone.get_layer(name).kernel.numpy(), kernel)
    ]
    if reason or unloaded:
        reason = (
            reason
            or f"{len(unloaded)} of {len(kernels)} layers not in the file: "
            f"{', '.join(unloaded[:3])}"
        )
        raise UserError(
            f"weights file {path} does not fit VGG16 without its top ({reason}); pass "
            f"the notop file {IMAGENET_FILE} or weights saved from "
            "keras.applications.VGG16(include_top=False)"
        )
    return backbone


def weights_fingerprint(model):
    """A hash of every weight value: two backbones share cached features only if it matches."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- features


def to_backbone_input(images, preprocess):
    """Images in [0, 1] (N, H, W, 3, RGB) as the backbone expects them."""
    if preprocess == "rescale":
        return images  # the handout's 1/255: pixels already are in [0, 1]
    from keras.applications.vgg16 import preprocess_input

    return preprocess_input(images * 255.0)


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def feature_cache_key(paths, image_size, preprocess, backbone_id):
    """One key per (file names and contents, size, weights, preprocessing)."""
    digest = hashlib.sha256(
        json.dumps([CACHE_VERSION, image_size, preprocess, backbone_id]).encode()
    )
    for path in sorted(str(Path(p).resolve()) for p in paths):
        digest.update(path.encode() + b"\0" + file_digest(path))
    return digest.hexdigest()[:24]


def load_batch(paths, image_size):
    from medlab.images import load_image

    return np.stack([load_image(p, (image_size, image_size), 3) for p in paths])


def run_backbone(backbone, paths, image_size, preprocess, batch_size=16):
    """Features of `paths` in order, decoding one batch while the backbone runs on the previous."""
    from medlab.progress import progress

    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]  # last one kept
    bar = progress(
        len(paths),
        f"extracting VGG16 features of {len(paths)} images at "
        f"{image_size}x{image_size} ({preprocess} preprocessing)",
    )
    features, done = [], 0
    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(load_batch, batches[0], image_size)
        for i in range(len(batches)):
            images = pending.result()
            if i + 1 < len(batches):
                pending = loader.submit(load_batch, batches[i + 1], image_size)
            features.append(
                np.asarray(backbone.predict_on_batch(to_backbone_input(images, preprocess)))
            )
            done += len(images)
            bar.update(done)
    return np.concatenate(features).astype(np.float32)


def cached_features(backbone, paths, image_size, preprocess, cache_dir, backbone_id):
    """Backbone features of `paths` in the order given, and whether the cache had them.

    The cache stores the features of the sorted file list with the list itself, so any order or
    subset of the same files reuses it, and each row is looked up by its file, never by position.
    """
    key = feature_cache_key(paths, image_size, preprocess, backbone_id)
    cache = Path(cache_dir) / f"{key}.npz"
    names = sorted(str(Path(p).resolve()) for p in paths)
    if cache.is_file():
        stored = np.load(cache)
        features, stored_names = stored["features"], stored["paths"].tolist()
        print(f"feature cache hit: skipped extraction, reusing {cache}")
        hit = True
    else:
        features = run_backbone(backbone, names, image_size, preprocess)
        stored_names = names
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(partial, features=features, paths=np.array(names))
        partial.replace(cache)  # atomic: an interrupted run never leaves a half-written cache
        print(f"features cached in {cache}")
        hit = False
    row = {name: i for i, name in enumerate(stored_names)}
    return features[[row[str(Path(p).resolve())] for p in paths]], hit


# ----------------------------------------------------------------------------- models


def build_head(feature_shape, dense_units, dropout):
    """The new classifier on top of the frozen features (the only trained part)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=feature_shape, name="features")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # float32 even under a mixed-precision policy, so probabilities and losses keep full precision.
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="prediction")(x)
    return keras.Model(inputs, outputs, name="transfer_head")


def preprocessing_layer(preprocess):
    """Built-in layers only, so the exported model loads anywhere without custom code."""
    from keras import layers

    if preprocess == "rescale":
        return layers.Rescaling(1.0 / 255, name="rescale")
    # vgg16.preprocess_input on 0-255 RGB: reverse the channels to BGR, subtract the ImageNet means.
    swap = np.zeros((1, 1, 3, 3), np.float32)
    for channel in range(3):
        swap[0, 0, 2 - channel, channel] = 1.0
    layer = layers.Conv2D(3, 1, name="vgg16_preprocess", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([swap, -np.array(IMAGENET_BGR_MEAN, np.float32)])
    return layer


def export_full_model(backbone, head, preprocess, image_size):
    """Backbone and trained head as one flat model that classifies raw 0-255 RGB images.

    Every layer is re-applied on a new input instead of nesting the backbone as a sub-model, so
    Grad-CAM tools can reach `block5_conv3` and the prediction in one graph.
    """
    import keras

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = preprocessing_layer(preprocess)(inputs)
    for layer in backbone.layers[1:]:
        x = layer(x)
    for layer in head.layers[1:]:
        x = layer(x)
    model = keras.Model(inputs, x, name="transfer_vgg16")
    model.trainable = False
    return model


def build_scratch(p):
    """The lab's VGG16-style model, fed pixels centred on 0 (`vgg.CENTRING`)."""
    from medlab.classification.vgg import build_vgg16_style

    return build_vgg16_style(
        (p["scratch_size"], p["scratch_size"], p["scratch_channels"]),
        base=p["scratch_base"],
        n_classes=1,
        centre=p["scratch_centre"],
        name="scratch_vgg16",
        batch_norm=p["scratch_batch_norm"],
        pooling=p["scratch_pooling"],
        dropout=p["scratch_dropout"],
    )


def scratch_epochs(p):
    return p["scratch_epochs"] or p["epochs"]


def scratch_batch_size(p):
    return p["scratch_batch_size"] or p["batch_size"]


# ----------------------------------------------------------------------------- experiments


def plan_evaluations(split, folds, seed):
    """(name, train indices, validation indices) into the list train paths + validation paths."""
    from medlab.classification.train import stratified_folds

    labels = np.concatenate([split.train_labels, split.val_labels])
    if folds >= 2:
        return [
            (f"fold{k + 1}", train, held_out)
            for k, (train, held_out) in enumerate(stratified_folds(labels, folds, seed))
        ]
    n_train = len(split.train_paths)
    return [("split", np.arange(n_train), np.arange(n_train, labels.size))]


def train_transfer(features, labels, train, val, p, csv_path, scaling):
    """A fresh head trained on cached features; returns it with validation scores and seconds."""
    from medlab.classification.train import (
        class_one_scores,
        class_weights,
        compile_classifier,
        fit_logged,
    )

    with scaling.scope():
        head = compile_classifier(
            build_head(features.shape[1:], p["dense_units"], p["dropout"]),
            p["lr"],
            jit_compile=scaling.jit,
        )
    seconds = fit_logged(
        head,
        (features[train], labels[train, None]),
        (features[val], labels[val, None]),
        p["epochs"],
        csv_path,
        scaling.global_batch(p["batch_size"]),
        class_weight=class_weights(labels[train], p["class_weight"]),
    )
    return head, class_one_scores(head, features[val]), seconds


def train_scratch(images, labels, train, val, p, seed, csv_path, scaling):
    from medlab.classification.train import (
        class_one_scores,
        class_weights,
        compile_classifier,
        fit_logged,
        image_dataset,
        learning_rate,
    )

    batch_size = scaling.global_batch(scratch_batch_size(p))
    lr = learning_rate(
        p["scratch_lr"],
        p["scratch_lr_schedule"],
        scratch_epochs(p),
        int(np.ceil(len(train) / batch_size)),
    )
    with scaling.scope():
        model = compile_classifier(build_scratch(p), lr, jit_compile=scaling.jit)
    targets = labels.astype(np.float32)[:, None]
    train_data = image_dataset(
        images[train], targets[train], batch_size, shuffle=True, augment=p["augment"], seed=seed
    )
    val_data = image_dataset(images[val], targets[val], batch_size)
    seconds = fit_logged(
        model,
        train_data,
        val_data,
        scratch_epochs(p),
        csv_path,
        class_weight=class_weights(labels[train], p["class_weight"]),
    )
    return model, class_one_scores(model, images[val]), seconds


def run_evaluations(data, p, run_dir, scaling):
    """Train both models for every (seed, fold); keep the first run's models for export."""
    from medlab.app.runs import set_seed

    runs, kept = [], {}
    for repeat in range(p["seeds"]):
        seed = p["seed"] + repeat
        for name, train, val in data["evaluations"]:
            tag = "" if not runs else f"-{name}-seed{seed}"
            print(f"\n=== {name}, seed {seed}: {len(train)} training, {len(val)} validation images")
            set_seed(seed)
            head, transfer_scores, head_seconds = train_transfer(
                data["features"],
                data["labels"],
                train,
                val,
                p,
                run_dir / f"history_transfer{tag}.csv",
                scaling,
            )
            set_seed(seed)
            scratch, scratch_scores, scratch_seconds = train_scratch(
                data["images"],
                data["labels"],
                train,
                val,
                p,
                seed,
                run_dir / f"history_scratch{tag}.csv",
                scaling,
            )
            if not runs:
                kept = {"head": head, "scratch": scratch}
            runs.append(
                {
                    "name": name,
                    "seed": seed,
                    "tag": tag,
                    "val": val,
                    "scores": {"transfer": transfer_scores, "scratch": scratch_scores},
                    "seconds": {"transfer": head_seconds, "scratch": scratch_seconds},
                }
            )
    return runs, kept


# ----------------------------------------------------------------------------- metrics


def oriented(labels, scores, positive):
    """Labels and scores with the positive class as 1, whichever label it has."""
    labels = np.asarray(labels)
    return (labels == positive).astype(int), (scores if positive == 1 else 1.0 - np.asarray(scores))


def first_seed_predictions(runs, labels, seed):
    """Validation labels and scores of the first seed, pooled over folds (each image once)."""
    chosen = [r for r in runs if r["seed"] == seed]
    index = np.concatenate([r["val"] for r in chosen])
    scores = {m: np.concatenate([r["scores"][m] for r in chosen]) for m in ("transfer", "scratch")}
    return index, labels[index], scores


def summarise(runs, labels, positive, p):
    """metrics.json: intervals on the pooled first-seed predictions, spread over all runs."""
    from medlab.classification.metrics import binary_metrics, bootstrap_metrics

    index, truth, scores = first_seed_predictions(runs, labels, p["seed"])
    truth_pos, oriented_scores = None, {}
    for method, values in scores.items():
        truth_pos, oriented_scores[method] = oriented(truth, values, positive)
    intervals = bootstrap_metrics(
        truth_pos, oriented_scores, p["bootstrap"], p["seed"], 0.95, THRESHOLD
    )
    per_run = [
        {
            "name": r["name"],
            "seed": r["seed"],
            **{
                m: binary_metrics(*oriented(labels[r["val"]], r["scores"][m], positive), THRESHOLD)
                for m in ("transfer", "scratch")
            },
        }
        for r in runs
    ]
    result = {}
    for method in ("transfer", "scratch"):
        point = binary_metrics(truth_pos, oriented_scores[method], THRESHOLD)
        entry = {}
        for metric in METRICS:
            entry[f"val_{metric}"] = point[metric]
            entry[f"val_{metric}_ci"] = intervals[method][metric]
            values = [run[method][metric] for run in per_run]
            entry[f"val_{metric}_mean"] = float(np.nanmean(values))
            entry[f"val_{metric}_std"] = float(np.nanstd(values))
        entry["train_seconds"] = float(np.sum([r["seconds"][method] for r in runs]))
        result[method] = entry
    difference = {}
    for metric in METRICS:
        difference[f"val_{metric}"] = (
            result["transfer"][f"val_{metric}"] - result["scratch"][f"val_{metric}"]
        )
        difference[f"val_{metric}_ci"] = intervals["difference"][metric]
        spread = [run["transfer"][metric] - run["scratch"][metric] for run in per_run]
        difference[f"val_{metric}_mean"] = float(np.nanmean(spread))
        difference[f"val_{metric}_std"] = float(np.nanstd(spread))
    difference["verdict"] = verdict(difference)
    result["difference"] = difference
    result["runs"] = per_run
    result["scored_images"] = int(index.size)
    return result, (truth_pos, oriented_scores)


def log_hparams(run_dir, p, metrics):
    """Both models' parameters and pooled scores for TensorBoard's HParams dashboard."""
    from medlab.app.tensorboard_logs import write_hparams
    from medlab.classification.train import tensorboard_model_dir

    for model in ("transfer", "scratch"):
        write_hparams(
            tensorboard_model_dir(run_dir / f"history_{model}.csv"),
            {**p, "model": model},
            metrics[model],
            f"{run_dir.name}/{model}",
        )


def learning_checks(runs, labels, class_names, p, typed):
    """Has each model learnt? Checked on the first seed's validation predictions at the threshold;
    adds the counts to `metrics` entries and returns the advice (None when both learnt)."""
    from medlab.app.collapse import learning_check, not_learnt_sentence, try_instead

    _, truth, scores = first_seed_predictions(runs, labels, p["seed"])
    checks = {}
    for method, model in (("transfer", "The transfer head"), ("scratch", "The from-scratch model")):
        check = learning_check(truth, np.asarray(scores[method]) >= THRESHOLD, class_names)
        checks[method] = {**check, "not_learnt_message": not_learnt_sentence(check, model)}
    if not any(check["not_learnt"] for check in checks.values()):
        return checks, None
    advice = try_instead("transfer_vgg16.py", typed, PRESETS["recommended"], p["preset"])
    if (
        checks["transfer"]["not_learnt"] and p["weights"] == "none"
    ):  # no preset helps random features
        advice += (
            " The head's features come from a random VGG16 (--weights none): "
            "use --weights imagenet."
        )
    return checks, advice


def not_learnt_lines(metrics):
    """Bold sentences for the summary, one per model that has not learnt, then the advice."""
    sentences = [
        metrics[m]["not_learnt_message"]
        for m in ("transfer", "scratch")
        if metrics[m]["not_learnt"]
    ]
    if not sentences:
        return []
    return [f"**{sentence}.**" for sentence in sentences] + [metrics["try_instead"], ""]


def verdict(difference):
    """Plain words: is transfer minus scratch accuracy outside the noise of the bootstrap?"""
    low, high = difference["val_accuracy_ci"]
    value = difference["val_accuracy"]
    span = f"{value:+.3f} (95% CI {low:+.3f} to {high:+.3f})"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"accuracy difference transfer - scratch {span}: too few images to judge"
    if low > 0:
        return f"transfer learning is more accurate: difference {span}, larger than the noise"
    if high < 0:
        return f"training from scratch is more accurate: difference {span}, larger than the noise"
    return f"no accuracy difference larger than the noise: difference {span} includes 0"


# ----------------------------------------------------------------------------- figures and report


def plot_roc(truth, scores, metrics, path, positive_name):
    import matplotlib.pyplot as plt

    from medlab.classification.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for i, (method, values) in enumerate(scores.items()):
        fpr, tpr = roc_curve(truth, values)
        low, high = metrics[method]["val_auc_ci"]
        ax.plot(
            fpr,
            tpr,
            color=f"C{i}",
            label=f"{method}: AUC {metrics[method]['val_auc']:.3f} [{low:.3f}, {high:.3f}]",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel(f"sensitivity ({positive_name} positive)")
    ax.set_title("ROC on validation images")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(truth, scores, class_names, positive, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.8))
    for ax, (method, values) in zip(np.atleast_1d(axes), scores.items()):
        predicted = (np.asarray(values) >= THRESHOLD).astype(int)
        # Back to folder labels, so rows and columns read as the class names in label order.
        to_label = (lambda x: x) if positive == 1 else (lambda x: 1 - x)
        matrix = np.zeros((2, 2), int)
        for t, q in zip(to_label(np.asarray(truth)), to_label(predicted)):
            matrix[t, q] += 1
        ax.imshow(matrix, cmap="Blues")
        for (r, c), count in np.ndenumerate(matrix):
            ax.text(
                c,
                r,
                str(count),
                ha="center",
                va="center",
                color="white" if count > matrix.max() / 2 else "black",
                fontsize=12,
            )
        ax.set_xticks([0, 1], class_names)
        ax.set_yticks([0, 1], class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(method)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mean_history(paths):
    """Epoch-wise mean of several CSVLogger histories of equal length."""
    from medlab.plots import read_history

    histories = [read_history(p) for p in paths]
    return {key: list(np.mean([h[key] for h in histories], axis=0)) for key in histories[0]}


def write_figures(run_dir, runs, truth, scores, metrics, class_names, positive):
    from medlab.plots import plot_curves

    curves = {
        method: mean_history([run_dir / f"history_{method}{r['tag']}.csv" for r in runs])
        for method in ("transfer", "scratch")
    }
    label = "" if len(runs) == 1 else f" (mean of {len(runs)} runs)"
    plot_curves(
        {f"{m}{label}": h for m, h in curves.items()},
        run_dir / "curves.png",
        metrics=("loss", "accuracy"),
    )
    plot_roc(truth, scores, metrics, run_dir / "roc.png", class_names[positive])
    plot_confusion(truth, scores, class_names, positive, run_dir / "confusion.png")


def write_summary(run_dir, metrics, context):
    from medlab.app.report import markdown_table

    rows = []
    for method in ("transfer", "scratch", "difference"):
        entry = metrics[method]
        row = {"model": method if method != "difference" else "transfer - scratch"}
        for metric in METRICS:
            low, high = entry[f"val_{metric}_ci"]
            row[metric] = f"{entry[f'val_{metric}']:.3f} [{low:.3f}, {high:.3f}]"
        rows.append(row)
    lines = [f"# Transfer learning vs training from scratch: {context['data_name']}", ""]
    if context["synthetic"]:
        lines += ["**Synthetic demo data**: the numbers say nothing about real images.", ""]
    if context["weights"] == "none":
        lines += [
            "**Random backbone (`--weights none`)**: the features come from an untrained VGG16, "
            "so this run is a smoke test of the pipeline, not transfer learning.",
            "",
        ]
    lines += not_learnt_lines(metrics)
    lines += [
        f"- data: `{context['data_dir']}`; {context['describe']}",
        f"- training: preset `{context['preset'] or 'none'}`, "
        f"class weights `{context['class_weight']}` "
        f"(head and from-scratch model); from-scratch model {context['scratch']}",
        f"- backbone: VGG16 without top, weights `{context['weights']}`, input "
        f"{context['image_size']}x{context['image_size']}x3, `{context['preprocess']}` "
        f"preprocessing, features {context['feature_shape']}; extraction "
        f"{'skipped (cache hit)' if context['cache_hit'] else 'ran'}",
        f"- evaluation: {context['evaluation']}; positive class **{context['positive_name']}** "
        f"(sensitivity = its recall), threshold {THRESHOLD}; the final epoch's model is scored",
        "",
        "## Validation metrics with 95% bootstrap confidence intervals",
        "",
        f"Scored on {metrics['scored_images']} validation predictions (first seed"
        f"{', pooled over folds' if context['folds'] else ''}); intervals from "
        f"{context['bootstrap']} paired bootstrap resamples of the images.",
        "",
        markdown_table(rows, ["model", *METRICS]),
        "",
        f"**Verdict:** {metrics['difference']['verdict']}.",
        "",
    ]
    if len(metrics["runs"]) > 1:
        lines += [
            f"## Spread over {len(metrics['runs'])} runs (folds x seeds)",
            "",
            markdown_table(
                [
                    {
                        "model": m,
                        **{
                            k: f"{metrics[m][f'val_{k}_mean']:.3f} +- "
                            f"{metrics[m][f'val_{k}_std']:.3f}"
                            for k in METRICS
                        },
                    }
                    for m in ("transfer", "scratch", "difference")
                ],
                ["model", *METRICS],
            ),
            "",
        ]
    lines += [
        "## Learning curves",
        "",
        "![curves](curves.png)",
        "",
        "## ROC and confusion matrices",
        "",
        "![roc](roc.png)",
        "",
        "![confusion](confusion.png)",
        "",
        "## Files",
        "",
        "- `transfer_vgg16.keras`: backbone + head, classifies raw 0-255 RGB images "
        f"({context['image_size']}x{context['image_size']}); `transfer_head.keras`: the head alone",
        "- `scratch_vgg16.keras`: the from-scratch model (inputs in [0, 1])",
        "- `history_*.csv`, `predictions.csv`, `metrics.json`, `config.json`",
        "",
        "Predict: `python transfer_vgg16.py predict transfer_vgg16.keras IMAGE...`",
        "",
    ]
    (run_dir / "summary.md").write_text("\n".join(lines))


def describe_scratch(p):
    """The from-scratch model's settings in words, e.g. for the summary."""
    return (
        f"{p['scratch_size']}x{p['scratch_size']}x{p['scratch_channels']}, "
        f"{'centred' if p['scratch_centre'] else '[0, 1]'} pixels, "
        f"{'batch norm, ' if p['scratch_batch_norm'] else ''}{p['scratch_pooling']} top, dropout "
        f"{p['scratch_dropout']}, lr {p['scratch_lr']:g} {p['scratch_lr_schedule']}, "
        f"{scratch_epochs(p)} epochs of batch {scratch_batch_size(p)}"
        f"{', augmented' if p['augment'] else ''}"
    )


def save_models(run_dir, kept, backbone, p, class_names):
    """The exported transfer model, the head and the scratch model, each with a small info file."""
    from medlab.app.runs import write_json
    from medlab.atomic import save_model_atomic

    full = export_full_model(backbone, kept["head"], p["preprocess"], p["image_size"])
    models = {
        "transfer_vgg16": (full, 255.0, 3),
        "transfer_head": (kept["head"], None, None),
        "scratch_vgg16": (kept["scratch"], 1.0, p["scratch_channels"]),
    }
    for name, (model, scale, channels) in models.items():
        save_model_atomic(model, run_dir / f"{name}.keras")
        if scale is not None:
            write_json(
                run_dir / f"{name}.json",
                {
                    "class_names": class_names,
                    "input_scale": scale,
                    "channels": channels,
                    "positive_output": class_names[1],
                },
            )


def write_predictions(run_dir, runs, paths, labels, class_names):
    from medlab.plots import write_csv

    rows = [
        {
            "run": r["name"],
            "seed": r["seed"],
            "image": str(paths[i]),
            "label": class_names[labels[i]],
            "p_transfer": float(r["scores"]["transfer"][k]),
            "p_scratch": float(r["scores"]["scratch"][k]),
        }
        for r in runs
        for k, i in enumerate(r["val"])
    ]
    write_csv(
        run_dir / "predictions.csv",
        rows,
        ["run", "seed", "image", "label", "p_transfer", "p_scratch"],
    )


# ----------------------------------------------------------------------------- command line


def locate_data(p, flags):
    """The data folder, whether it is synthetic, and the demo settings that then apply."""
    if p["data_dir"]:
        return Path(p["data_dir"]), False, {}
    if p["dataset"] not in DATASETS:
        raise UserError(
            f"--dataset {p['dataset']} is unknown; choose one of {', '.join(DATASETS)} "
            "or pass --data-dir with your own folder"
        )
    if Path(DATASETS[p["dataset"]]).exists():
        return Path(DATASETS[p["dataset"]]), False, {}
    from medlab.synthetic.common import synthetic_banner
    from medlab.synthetic.skin_bone import synthetic_class_set

    folder = synthetic_class_set(p["dataset"])
    shown = {**SYNTHETIC_DEMO, **{k: v for k, v in flags.items() if k in SYNTHETIC_DEMO}}
    synthetic_banner(
        f"generated {p['dataset']} images (no {DATASETS[p['dataset']]} found)",
        folder,
        ", ".join(f"{k}={v}" for k, v in shown.items()),
    )
    return folder, True, SYNTHETIC_DEMO


def check_parameters(p):
    from medlab.app.cli import check_range
    from medlab.distribute import check_scaling

    check_scaling(p)
    if p["preprocess"] not in ("vgg16", "rescale"):
        raise UserError(f"--preprocess {p['preprocess']} is unknown; choose vgg16 or rescale")
    for name, low in (
        ("epochs", 1),
        ("batch_size", 1),
        ("seeds", 1),
        ("image_size", 32),
        ("dense_units", 1),
        ("scratch_base", 1),
        ("bootstrap", 100),
        ("folds", 0),
    ):
        check_range(name, p[name], low)
    for name in ("lr", "scratch_lr"):
        check_range(name, p[name], 1e-12, hint=": a learning rate must be positive")
    check_range("dropout", p["dropout"], 0.0, 1.0, high_open=True)
    check_range("val_fraction", p["val_fraction"], 0.01, 1.0, high_open=True)
    if p["folds"] == 1:
        raise UserError("--folds 1 is not cross-validation; use 0 (the split) or K >= 2")
    if p["scratch_size"] < 32 or p["scratch_size"] % 32:
        raise UserError(
            f"--scratch-size {p['scratch_size']} must be a multiple of 32 (five poolings)"
        )
    if p["scratch_channels"] not in (1, 3):
        raise UserError(f"--scratch-channels {p['scratch_channels']} must be 1 or 3")
    check_scratch_options(p)


def check_scratch_options(p):
    from medlab.app.cli import check_range

    for name, allowed in (
        ("scratch_pooling", ("flatten", "max", "avg")),
        ("class_weight", ("none", "balanced")),
        ("scratch_lr_schedule", ("constant", "cosine")),
    ):
        if p[name] not in allowed:
            raise UserError(
                f"--{name.replace('_', '-')} {p[name]} is unknown; choose {' or '.join(allowed)}"
            )
    check_range("scratch_dropout", p["scratch_dropout"], 0.0, 1.0, high_open=True)
    check_range("scratch_epochs", p["scratch_epochs"], 0)
    check_range("scratch_batch_size", p["scratch_batch_size"], 0)


def parse_arguments(argv):
    from medlab.app.cli import Parser, add_parameter_flags

    parser = Parser(
        description="Transfer learning with a frozen VGG16 vs the from-scratch VGG16-style model. "
        "Use 'transfer_vgg16.py predict MODEL IMAGE...' to classify images."
    )
    add_parameter_flags(parser, PARAMETERS, HELP)
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="settings of the from-scratch model and the class weights: lab (the "
        "handout's Lab 2 model exactly) or recommended (README); flags still override",
    )
    return parser.parse_args(argv)


def prepare_data(split, backbone, p):
    """Features and scratch-model images of train + validation, with their labels, in one order."""
    from medlab.classification.data import load_arrays

    paths = list(split.train_paths) + list(split.val_paths)
    labels = np.concatenate([split.train_labels, split.val_labels]).astype(np.int32)
    start = time.perf_counter()
    features, cache_hit = cached_features(
        backbone,
        paths,
        p["image_size"],
        p["preprocess"],
        p["cache_dir"],
        weights_fingerprint(backbone),
    )
    images = load_arrays(
        paths,
        (p["scratch_size"],) * 2,
        p["scratch_channels"],
        "loading images for the from-scratch model",
    )
    return {
        "paths": paths,
        "labels": labels,
        "features": features,
        "images": images,
        "cache_hit": cache_hit,
        "extract_seconds": time.perf_counter() - start,
        "evaluations": plan_evaluations(split, p["folds"], p["seed"]),
    }


def train_command(argv):
    from medlab.app.checks import check_writable_folder
    from medlab.app.cli import typed_flags
    from medlab.app.runs import mark_complete, new_run_dir, save_config, set_seed, write_json
    from medlab.classification.data import load_class_split
    from medlab.distribute import configure_precision, configure_scaling

    args = parse_arguments(argv)
    quiet_tensorflow()
    flags = typed_flags(args, PARAMETERS)
    data_dir, synthetic, demo = locate_data({**PARAMETERS, **flags}, flags)
    p = {**PARAMETERS, **demo, **PRESETS.get(args.preset, {}), **flags, "preset": args.preset}
    check_parameters(p)
    check_writable_folder(p["cache_dir"], "--cache-dir")  # before the slow extraction, not after
    split = load_class_split(data_dir, p["val_fraction"], p["seed"])
    print(split.describe())
    if p["positive"] != "auto" and p["positive"] not in split.class_names:
        raise UserError(
            f"--positive {p['positive']} is not a class; choose one of "
            f"{', '.join(split.class_names)}"
        )
    positive = positive_label(split.class_names, p["positive"])
    # The strategy before TensorFlow runs anything (MultiWorkerMirroredStrategy needs that); the
    # precision policy only after the features are cached, so it never reaches the backbone.
    scaling = configure_scaling(p["strategy"], jit=p["jit"], batch_size=p["batch_size"])
    set_seed(p["seed"])  # a random backbone (--weights none) is then the same in every run
    backbone = load_backbone(p["weights"], p["image_size"])
    data = prepare_data(split, backbone, p)  # before the run folder: a corrupt image stops here
    data_name = Path(data_dir).name + ("-synthetic" if synthetic else "")
    run_dir = new_run_dir(p["out"], data_name.lower())
    print(f"writing results to {run_dir}")
    save_config(
        run_dir,
        {
            **p,
            "data_dir": str(data_dir),
            "synthetic": synthetic,
            "class_names": split.class_names,
            "positive_class": split.class_names[positive],
        },
    )
    configure_precision(p["mixed_precision"])
    runs, kept = run_evaluations(data, p, run_dir, scaling)
    metrics, (truth, scores) = summarise(runs, data["labels"], positive, p)
    checks, metrics["try_instead"] = learning_checks(
        runs, data["labels"], split.class_names, p, flags
    )
    for method, check in checks.items():
        metrics[method].update(check)
    evaluation = (
        f"stratified {p['folds']}-fold cross-validation on train+validation"
        if p["folds"] >= 2
        else f"the {split.layout}-layout validation set"
    ) + f", {p['seeds']} seed(s)"
    metrics["evaluation"] = {
        "kind": evaluation,
        "class_names": split.class_names,
        "positive_class": split.class_names[positive],
        "threshold": THRESHOLD,
        "weights": p["weights"],
        "preprocess": p["preprocess"],
        "synthetic": synthetic,
        "feature_cache_hit": data["cache_hit"],
        "feature_seconds": round(data["extract_seconds"], 1),
    }
    write_json(run_dir / "metrics.json", metrics)
    log_hparams(run_dir, p, metrics)
    write_predictions(run_dir, runs, data["paths"], data["labels"], split.class_names)
    write_figures(run_dir, runs, truth, scores, metrics, split.class_names, positive)
    save_models(run_dir, kept, backbone, p, split.class_names)
    write_summary(
        run_dir,
        metrics,
        {
            "data_name": data_name,
            "synthetic": synthetic,
            "weights": p["weights"],
            "data_dir": data_dir,
            "describe": split.describe(),
            "image_size": p["image_size"],
            "preprocess": p["preprocess"],
            "feature_shape": "x".join(map(str, data["features"].shape[1:])),
            "cache_hit": data["cache_hit"],
            "evaluation": evaluation,
            "positive_name": split.class_names[positive],
            "folds": p["folds"] >= 2,
            "bootstrap": p["bootstrap"],
            "preset": p["preset"],
            "class_weight": p["class_weight"],
            "scratch": describe_scratch(p),
        },
    )
    print(f"\n{metrics['difference']['verdict']}")
    from medlab.app.collapse import print_bold

    for line in not_learnt_lines(metrics)[:-1]:
        print_bold(line.strip("*"))
    mark_complete(run_dir)
    print(f"summary: {run_dir / 'summary.md'}")
    return run_dir


def predict_command(argv):
    """Print the class and its probability for each image, using a model saved by a run."""
    from medlab.app.cli import Parser
    from medlab.images import load_image

    parser = Parser(
        prog="transfer_vgg16.py predict", description="classify images with a model saved by a run"
    )
    parser.add_argument(
        "model", help="transfer_vgg16.keras (or scratch_vgg16.keras) of a results folder"
    )
    parser.add_argument("images", nargs="+", help="image files (png, jpg, bmp, tif)")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    model, info = load_saved_model(Path(args.model))
    size = model.input_shape[1:3]
    for path in args.images:
        if not Path(path).is_file():
            raise UserError(f"image {path} does not exist")
        image = load_image(path, size, info["channels"]) * info["input_scale"]
        p_one = float(model.predict(image[None], verbose=0)[0, -1])
        label = int(p_one >= THRESHOLD)
        print(
            f"{path}: {info['class_names'][label]} "
            f"(probability {p_one if label else 1 - p_one:.3f})"
        )


def load_saved_model(path):
    from medlab.app.runs import load_keras_model

    info_path = path.with_suffix(".json")
    if path.is_file() and not info_path.is_file():
        raise UserError(
            f"{info_path} is missing; predict needs the class names a run writes next "
            "to transfer_vgg16.keras and scratch_vgg16.keras"
        )
    return load_keras_model(path, "transfer_vgg16.py"), json.loads(info_path.read_text())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return predict_command(argv[1:])
    return train_command(argv)


if __name__ == "__main__":
    main_guard(main, lower="--batch-size, --image-size or --scratch-size")()
