"""Tasks 1-2's library: a frozen VGG16 backbone, its cached features, the head trained on them, the
exported backbone + head model, and the figures that compare it with a from-scratch model.

The backbone comes from `keras.applications` (ImageNet weights, downloaded once into the Keras
cache), from a local VGG16 notop weights file, or random (smoke tests only). Its features of a
file list are computed once and cached on disk, keyed by the files' names and contents, the input
size, the preprocessing, a fingerprint of the weights and the precision they were computed in
(float32, or bfloat16 where the hardware computes it natively: about twice as fast, cast back to
float32 before the cache).
"""

import contextlib
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from keras import layers
from keras.applications.vgg16 import preprocess_input

from medlab.classification.metrics import roc_curve
from medlab.distribute import check_native_bfloat16
from medlab.errors import UserError, disk_full, first_line
from medlab.images import check_file, denied, load_image
from medlab.plots import plt  # pyplot with the file-only backend that medlab.plots selects
from medlab.progress import progress

IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")
# ImageNet means in BGR order, as keras.applications.vgg16.preprocess_input subtracts them.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
CACHE_VERSION = 1
# --feature-precision: the Keras dtype policy the backbone is built with (float32 variables either
# way, so any weights file loads).
FEATURE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


class WeightsUnavailable(UserError):
    """The ImageNet weights could not be downloaded (no internet, a proxy, a damaged cache)."""


# ----------------------------------------------------------------------------- backbone


def keras_cache_file():
    """Where Keras looks for the ImageNet file before downloading it."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / IMAGENET_FILE


def load_backbone(weights, image_size, precision="float32"):
    """VGG16's convolutional base with `weights` ("imagenet", "none" or a file), frozen, computing
    in `precision` (float32 or bfloat16, see `FEATURE_POLICIES`)."""
    if precision == "bfloat16":
        check_native_bfloat16("--feature-precision bfloat16", "float32")
    shape = (image_size, image_size, 3)
    with dtype_policy(FEATURE_POLICIES[precision]):
        if weights == "none":
            backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
        elif weights == "imagenet":
            backbone = download_imagenet_backbone(shape)
        else:
            backbone = backbone_from_file(Path(weights), shape)
    backbone.trainable = False
    return backbone


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to `name` while the layers are built, then restored."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def feature_precision(backbone):
    """The precision the backbone computes in (its dtype policy's): float32 or bfloat16."""
    return getattr(backbone, "compute_dtype", "float32")


def download_imagenet_backbone(shape):
    try:
        return keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as error:  # any failed download or check: never continue with other weights
        raise WeightsUnavailable(
            f"cannot get the ImageNet VGG16 weights ({first_line(error)}); on a machine without "
            f"internet copy {IMAGENET_FILE} to {keras_cache_file()}"
        ) from None


def backbone_from_file(path, shape):
    """VGG16 without its top with every layer loaded from `path`; never half-random."""
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
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
        reason = first_line(error)
    # A layer whose kernel still equals its random start was not loaded.
    unloaded = [
        name
        for name, kernel in kernels.items()
        if np.array_equal(backbone.get_layer(name).kernel.numpy(), kernel)
    ]
    if reason or unloaded:
        reason = reason or (
            f"{len(unloaded)} of {len(kernels)} layers not in the file: {', '.join(unloaded[:3])}"
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
    return preprocess_input(images * 255.0)


def file_digest(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except PermissionError:
        raise denied(path) from None
    return digest.digest()


def feature_cache_key(paths, image_size, preprocess, backbone_id, precision="float32"):
    """One key per (file names and contents, size, weights, preprocessing, precision)."""
    for path in paths:
        check_file(path)  # a broken link or a folder: the loaders' one line, before any hashing
    settings = [CACHE_VERSION, image_size, preprocess, backbone_id]
    # float32 keys are those of the versions before bfloat16, so their caches stay valid.
    settings += [precision] if precision != "float32" else []
    digest = hashlib.sha256(json.dumps(settings).encode())
    for path in sorted(str(Path(p).resolve()) for p in paths):
        digest.update(path.encode() + b"\0" + file_digest(path))
    return digest.hexdigest()[:24]


def load_batch(paths, image_size):
    return np.stack([load_image(p, (image_size, image_size), 3) for p in paths])


def run_backbone(backbone, paths, image_size, preprocess, batch_size=16):
    """Features of `paths` in order, decoding one batch while the backbone runs on the previous."""
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]  # last one kept
    bar = progress(
        len(paths),
        f"extracting VGG16 features of {len(paths)} images at "
        f"{image_size}x{image_size} ({preprocess} preprocessing, {feature_precision(backbone)})",
    )
    features, done = [], 0
    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(load_batch, batches[0], image_size)
        for i in range(len(batches)):
            images = pending.result()
            if i + 1 < len(batches):
                pending = loader.submit(load_batch, batches[i + 1], image_size)
            batch = backbone.predict_on_batch(to_backbone_input(images, preprocess))
            features.append(np.asarray(batch).astype(np.float32))  # bfloat16 too: float32 cache
            done += len(images)
            bar.update(done)
    return np.concatenate(features)


def cached_features(backbone, paths, image_size, preprocess, cache_dir, backbone_id):
    """Backbone features of `paths` in the order given, and whether the cache had them.

    The cache stores the features of the sorted file list with the list itself, so any order or
    subset of the same files reuses it, and each row is looked up by its file, never by position.
    """
    key = feature_cache_key(paths, image_size, preprocess, backbone_id, feature_precision(backbone))
    cache = Path(cache_dir) / f"{key}.npz"
    names = sorted(str(Path(p).resolve()) for p in paths)
    stored = read_cache(cache, names) if cache.is_file() else None
    if stored is not None:
        features, stored_names = stored
        print(f"feature cache hit: skipped extraction, reusing {cache}")
        hit = True
    else:
        features = run_backbone(backbone, names, image_size, preprocess)
        stored_names = names
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_cache(cache, features, names)
        print(f"features cached in {cache}")
        hit = False
    row = {name: i for i, name in enumerate(stored_names)}
    return features[[row[str(Path(p).resolve())] for p in paths]], hit


def read_cache(cache, names):
    """(features, their file names) of a cache, or None, with a note, when it is damaged
    (truncated, altered: the zip format's checksums fail, or its rows do not match its files): a
    cache is only a shortcut, so it is removed and rebuilt."""
    try:
        with np.load(cache) as stored:
            features, stored_names = stored["features"], stored["paths"].tolist()
        if len(features) != len(stored_names) or not set(names) <= set(stored_names):
            raise ValueError("its rows do not match its files")
        return features, stored_names
    except Exception as error:  # zipfile, zlib and NumPy raise many types for a damaged file
        print(f"note: the feature cache {cache} is damaged ({first_line(error)}); rebuilding it")
        cache.unlink(missing_ok=True)
        return None


def write_cache(cache, features, names):
    """Write the cache under a partial name and rename it (a kill never leaves half a cache); on a
    full disk the partial file goes and the message names --cache-dir."""
    partial = cache.with_suffix(".partial.npz")
    try:
        np.savez(partial, features=features, paths=np.array(names))
        partial.replace(cache)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if not disk_full(error):
            raise
        raise UserError(
            f"the disk is full: the feature cache {cache} could not be written "
            f"({first_line(error)}); free space or pass --cache-dir on a disk with room (the "
            "partial cache was removed)"
        ) from None


# ----------------------------------------------------------------------------- models


def build_head(feature_shape, dense_units, dropout):
    """The new classifier on top of the frozen features (the only trained part)."""
    inputs = keras.Input(shape=feature_shape, name="features")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # float32 even under a mixed-precision policy, so probabilities and losses keep full precision.
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="prediction")(x)
    return keras.Model(inputs, outputs, name="transfer_head")


def preprocessing_layer(preprocess):
    """Built-in layers only, so the exported model loads anywhere without custom code."""
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
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = preprocessing_layer(preprocess)(inputs)
    for layer in backbone.layers[1:]:
        x = layer(x)
    for layer in head.layers[1:]:
        x = layer(x)
    model = keras.Model(inputs, x, name="transfer_vgg16")
    model.trainable = False
    return model


# ----------------------------------------------------------------------------- figures


def plot_roc(truth, scores, metrics, path, positive_name):
    """One ROC curve per model of `scores`, labelled with its AUC and interval from `metrics`."""
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


def relative_luminance(rgb):
    """WCAG 2's relative luminance of an sRGB colour with channels in [0, 1]."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first, second):
    """WCAG 2's contrast ratio of two colours, from 1 (none) to 21 (black on white)."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def readable_on(background):
    """Black or white, whichever contrasts more with `background` (at least 4.6:1 either way)."""
    black, white = (0, 0, 0), (1, 1, 1)
    return (
        "black"
        if contrast_ratio(black, background) >= contrast_ratio(white, background)
        else "white"
    )


def plot_confusion(truth, scores, class_names, positive, path, threshold):
    """One confusion matrix per model, rows and columns in the class folders' label order."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.8))
    for ax, (method, values) in zip(np.atleast_1d(axes), scores.items()):
        predicted = (np.asarray(values) >= threshold).astype(int)
        # Back to folder labels, so rows and columns read as the class names in label order.
        to_label = (lambda x: x) if positive == 1 else (lambda x: 1 - x)
        matrix = np.zeros((2, 2), int)
        for t, q in zip(to_label(np.asarray(truth)), to_label(predicted)):
            matrix[t, q] += 1
        cells = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.max()))
        for (r, c), count in np.ndenumerate(matrix):
            background = cells.cmap(cells.norm(count))
            ax.text(
                c,
                r,
                str(count),
                ha="center",
                va="center",
                color=readable_on(background),
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
