"""U-Net lung segmentation, one job per function: pairing, loading, splitting, augmentation,
metrics and losses, the model, training, evaluation and figures: a library, which raises and never
talks about command-line flags. `main_segmentation.py` calls these functions in order; its
command line, run folders and summary are `medlab.app.segmentation`'s.

Metric semantics (used everywhere, stated once):
- Every score is computed per image, then averaged over images (no pooling of pixels across images).
- Evaluation scores (`dice`, `iou`, `precision`, `recall`) compare binary masks, the prediction
  thresholded at 0.5. A score whose denominator is zero is 1 when both masks are empty and 0 when
  only one is, so an empty prediction for an empty truth is perfect and any other empty case fails.
- HD95 is the symmetric 95th-percentile Hausdorff distance between mask boundaries, in pixels of
  the evaluated image size, as MONAI computes it (the larger of the two directed percentiles; see
  `hd95`): 0 when both masks are empty, and the image diagonal (the worst value possible) when
  exactly one is.
- The training metric and the Dice loss use the soft Dice of the lab,
  (2 * sum(y * p) + s) / (sum(y) + sum(p) + s) with s = 1 on probabilities, per image; the
  smoothing makes both-empty images score 1 and keeps the gradient finite.
"""

import functools
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from keras import layers
from scipy import ndimage

from medlab import distribute
from medlab.augment import augmented_batches, random_affine, random_intensity
from medlab.checkpoints import EpochCheckpoint, fit_resumable
from medlab.checks import check_pairs
from medlab.errors import UserError
from medlab.images import decode, load_all, load_image, mask_levels, resize
from medlab.pairs import find_pairs, validation_count
from medlab.plots import fit_label
from medlab.schedules import learning_rate  # noqa: F401 (part of this module's training API)

THRESHOLD = 0.5
# Preloading holds the decoded arrays, the copy tf.data makes of them and the training shuffle
# buffer: bench/memory.py measured 3.4 GB for 1 GB of decoded pairs (0.75 GB of it TensorFlow).
PRELOAD_COPIES = 3
# Share of the memory budget that the shuffle buffer of --cache disk may fill.
DISK_SHUFFLE_SHARE = 0.25
SOFT_DICE_SMOOTH = 1.0
# A mask is "multi-label" when a grey level well away from 0 and from its maximum covers this
# share of the pixels; JPEG ringing at the edges stays far below it.
MULTI_LABEL_SHARE = 0.01
# Lungs cover about a quarter of a chest X-ray; a prediction over 90% of every image is no lung
# mask.
FULL_SHARE = 0.9
# Added to each image's pixel variance before `StandardizeImage` divides by its square root, so a
# blank image stays finite (a film's variance is about 0.05 in [0, 1] units).
STANDARDIZE_EPSILON = 1e-4
NORMALIZATIONS = ("none", "image")


# ------------------------------------------------------------------------- data
# What main_segmentation.py calls, in its order: every pair of a folder loaded once, one split
# of them, and the training and validation batches of an experiment. The internals follow the
# augmentation.


def load_every_pair(data_dir, size, cache="memory", memory_budget_gb=4.0, note=print):
    """All pairs of `data_dir`, decoded at `size` (cache memory) or as file paths (none or disk),
    for `split_pairs` to divide into training and validation (once, or once per fold).

    Every file is decoded once first, so a bad one raises `UserError` before anything else is
    done; data that loads but looks wrong, and the choice of cache auto, are passed to `note`.
    """
    image_paths, mask_paths = find_pairs(data_dir)
    # Every file is decoded once here, so a bad one stops the run before anything is written.
    masks_empty = check_pairs(image_paths, mask_paths, warn=note)
    cache = choose_cache(cache, len(image_paths), size, memory_budget_gb, note)
    if cache == "memory":
        pairs = (load_images(image_paths, size), load_masks(mask_paths, size))
    else:
        pairs = (np.array(image_paths, dtype=object), np.array(mask_paths, dtype=object))
    pair_gb = decoded_gb(1, size)
    return {
        "pairs": pairs,
        "names": [path.name for path in image_paths],
        "data_dir": str(data_dir),
        "masks_empty": masks_empty,
        "cache": cache,
        "size": size,
        "shuffle_buffer": max(1, int(DISK_SHUFFLE_SHARE * memory_budget_gb / pair_gb)),
    }


def split_pairs(every, train_idx, val_idx):
    """One split of `load_every_pair`'s pairs: their "train" and "val" parts, and its facts."""
    parts = {
        part: tuple(
            list(array[idx]) if array.dtype == object else array[idx] for array in every["pairs"]
        )
        for part, idx in (("train", train_idx), ("val", val_idx))
    }
    return {
        **parts,
        "val_names": [every["names"][i] for i in val_idx],
        **{
            key: every[key]
            for key in ("data_dir", "masks_empty", "cache", "size", "shuffle_buffer")
        },
    }


def experiment_datasets(params, data, batch_size, cache_dir=None):
    """Training (shuffled, augmented when asked) and validation batches of `batch_size` pairs."""
    return (
        pairs_dataset(
            data,
            "train",
            batch_size,
            shuffle=True,
            augment={"geometry": params["augment"], "intensity": params["augment_intensity"]},
            seed=params["seed"],
            cache_dir=cache_dir,
        ),
        pairs_dataset(data, "val", batch_size, cache_dir=cache_dir),
    )


# ----------------------------------------------------------------- augmentation
# The handout's augmentation generator: each training batch gets one random transform per pair,
# the same for the image and its mask (rotation, shift, zoom, flip), drawn from a seed that
# differs from batch to batch and epoch to epoch yet repeats with --seed.


def augment_pair(image, mask, seed, geometry=True, intensity=False, **options):
    """Transform images and masks together (one or a batch); masks come back binary (>= 0.5).

    `geometry`: the same `random_affine` of image and mask (`options` are its ranges);
    `intensity`: then `random_intensity` of the image alone, from a seed of its own.
    """
    if geometry:
        channels = tf.shape(image)[-1]
        stacked = random_affine(tf.concat([image, mask], axis=-1), seed, **options)
        mask = tf.cast(stacked[..., channels:] >= 0.5, mask.dtype)
        image = stacked[..., :channels]
    if intensity:
        image = random_intensity(image, tf.random.experimental.stateless_split(seed, 2)[1])
    return image, mask


def pair_transform(augment):
    """The transform of each training batch: None, or `augment_pair` with `augment`'s options.

    `augment` is False, True (geometry: rotation, shift, zoom, flip) or a dict of `augment_pair`'s
    switches, {"geometry": bool, "intensity": bool}.
    """
    if augment is True:
        augment = {"geometry": True}
    if not augment or not any(augment.values()):
        return None
    return functools.partial(augment_pair, **augment)


def batched(pairs, batch_size, augment, seed):
    """Batches of pairs, with one shared random transform per pair when `augment` is set."""
    dataset = augmented_batches(pairs, batch_size, pair_transform(augment), seed)
    options = tf.data.Options()
    # Pairs come from arrays or decoded file names, not from files TensorFlow can split between
    # workers, so each worker of a multi-worker run keeps its share of the elements.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------- data internals
# Preloaded arrays or files streamed through tf.data; decoding, caches and splits.


def pairs_dataset(data, part, batch_size, shuffle=False, augment=False, seed=0, cache_dir=None):
    """Batches of `data[part]` ("train" or "val") from `split_pairs`: preloaded or streamed."""
    if data["cache"] == "memory":
        return make_dataset(*data[part], batch_size, shuffle, augment, seed)
    if data["cache"] == "disk":
        return stream_dataset(
            *data[part],
            data["size"],
            batch_size,
            shuffle,
            augment,
            seed,
            cache_file=Path(cache_dir) / part,
            shuffle_buffer=data["shuffle_buffer"],
        )
    return stream_dataset(*data[part], data["size"], batch_size, shuffle, augment, seed)


def make_dataset(images, masks, batch_size, shuffle=False, augment=False, seed=0):
    """A `tf.data` pipeline of (image, mask) batches from preloaded arrays.

    Training data is shuffled and, when `augment` is set, each batch gets one random transform per
    pair, shared by image and mask. Validation data is neither shuffled nor augmented.
    """
    pairs = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        pairs = shuffled(pairs, len(images), seed)
    return batched(pairs, batch_size, augment, seed)


def stream_dataset(
    image_paths,
    mask_paths,
    size,
    batch_size,
    shuffle=False,
    augment=False,
    seed=0,
    cache_file=None,
    shuffle_buffer=None,
):
    """The pipeline of `make_dataset`, decoding and resizing the files inside `tf.data`.

    Without `cache_file`, the file names are shuffled before decoding: a full shuffle that holds
    no pixels, in the same order as `make_dataset` for the same seed. With `cache_file`, the
    decoded pairs are written there during the first epoch and read back afterwards; they are then
    shuffled in a buffer of `shuffle_buffer` pairs (all of them by default).
    """
    count = len(image_paths)
    paths = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in image_paths], [str(p) for p in mask_paths])
    )
    if cache_file is None:
        if shuffle:
            paths = shuffled(paths, count, seed)
        return batched(decoded(paths, size), batch_size, augment, seed)
    pairs = decoded(paths, size).cache(str(cache_file))
    if shuffle:
        pairs = shuffled(pairs, min(count, shuffle_buffer or count), seed)
    return batched(pairs, batch_size, augment, seed)


def shuffled(dataset, buffer, seed):
    return dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def decoded(paths, size):
    """(image path, mask path) elements -> (image, mask) arrays, decoded in parallel by the loaders
    of `load_images`/`load_masks`, so every format they read streams too."""

    def decode_pair(image_path, mask_path):
        return (
            load_image(image_path.decode(), (size, size), channels=1),
            load_mask(mask_path.decode(), size, warn=warn_once),
        )

    def decode(image_path, mask_path):
        image, mask = tf.numpy_function(
            decode_pair, [image_path, mask_path], [tf.float32, tf.float32], stateful=False
        )
        return tf.ensure_shape(image, (size, size, 1)), tf.ensure_shape(mask, (size, size, 1))

    return paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


_warned = set()


def warn_once(message):
    """Print a warning the first time only: streamed masks are decoded again every epoch."""
    if message not in _warned:
        _warned.add(message)
        print(message)


def choose_cache(mode, count, size, budget_gb, note=print):
    """`mode`, or for auto: memory when preloading fits `budget_gb`, else streaming (none); the
    reason for the choice goes to `note`."""
    if mode != "auto":
        return mode
    needed = PRELOAD_COPIES * decoded_gb(count, size)
    choice = "memory" if needed <= budget_gb else "none"
    note(
        f"cache auto: preloading {count} pairs at {size}x{size} would take about "
        f"{needed:.2f} GB, {'within' if choice == 'memory' else 'over'} the {budget_gb:g} GB "
        f"memory budget: cache {choice}"
    )
    return choice


def decoded_gb(count, size):
    """GiB of `count` image/mask pairs decoded to float32 at size x size."""
    return count * size * size * 2 * 4 / 2**30


def load_images(paths, size):
    """X-rays as float32 (N, size, size, 1) in [0, 1], whatever their size, depth and channels."""
    return load_all(
        paths,
        lambda p: load_image(p, (size, size), channels=1),
        (size, size, 1),
        f"loading {len(paths)} images at {size}x{size}",
    )


def load_mask(path, size, warn=print):
    """One mask as float32 (size, size, 1) in {0, 1}.

    The mask is read on its data type's scale (`mask_levels`: 0/1 and 0/255 masks both work),
    resized by area averaging and thresholded at 0.5, which also removes JPEG noise.
    """
    mask = mask_levels(decode(path))
    if looks_multi_label(mask):
        warn(
            f"warning: mask {path} has several grey levels; it is binarised at half its "
            "type's range, so check that it is a single lung mask"
        )
    # reshape: `resize` returns a mask already at `size` unchanged, without the channel axis
    return (resize(mask, (size, size)) >= THRESHOLD).astype(np.float32).reshape(size, size, 1)


def looks_multi_label(mask):
    middle = mask[(mask > 0.15) & (mask < 0.85)]
    if middle.size < MULTI_LABEL_SHARE * mask.size:
        return False
    levels = np.bincount(np.round(middle * 20).astype(int))
    return levels.max() >= MULTI_LABEL_SHARE * mask.size


def load_masks(paths, size):
    """Masks in the same order as `paths`, as float32 (N, size, size, 1) in {0, 1}."""
    return load_all(
        paths,
        lambda p: load_mask(p, size),
        (size, size, 1),
        f"loading {len(paths)} masks at {size}x{size}",
    )


def split_indices(count, val_fraction, seed):
    """A seeded train/validation split of `count` pairs, the same for every experiment."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = validation_count(count, val_fraction)
    if n_val >= count:
        raise UserError(
            f"only {count} image/mask pair(s): too few to keep {val_fraction:.0%} for "
            "validation; add pairs or hold out a smaller share"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fold_indices(count, folds, seed):
    """`folds` seeded (train, held-out) index pairs; every pair is held out by exactly one fold."""
    if folds > count:
        raise UserError(
            f"{folds} folds need at least {folds} image/mask pairs, but there are {count}; "
            "use fewer folds or add pairs"
        )
    fold_of = np.empty(count, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(count)] = np.arange(count) % folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]


def user_error_from_pipeline(error):
    """A streamed file that fails to decode surfaces as a TensorFlow error; recover our one line."""
    marker = "UserError: "
    if marker in error.message:
        return UserError(error.message.split(marker, 1)[1].splitlines()[0])
    return error


# ------------------------------------------------------------------------ model


def build_unet(
    input_shape=(256, 256, 1), base=8, depth=4, dropout=0.0, batch_norm=False, normalize="none"
):
    """The lab's U-Net: `depth` levels of base * 2**level filters, a bottleneck of base * 2**depth.

    Dropout (when > 0) follows every pooling and every skip concatenation; the decoder upsamples
    with Conv2DTranspose; the output is one sigmoid channel. `normalize` "image" standardises
    each input image first (`StandardizeImage`); "none" feeds the [0, 1] pixels as loaded.
    """
    size = input_shape[0]
    if size % 2**depth or input_shape[1] % 2**depth:
        raise UserError(
            f"image size {input_shape[0]}x{input_shape[1]} must be divisible by "
            f"2**depth = {2**depth}; choose a size of {size - size % 2**depth or 2**depth}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = StandardizeImage(name="standardize")(inputs) if normalize == "image" else inputs
    skips = []
    for level in range(depth):
        x = conv_block(x, base * 2**level, batch_norm, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"down{level}_dropout")(x)
    x = conv_block(x, base * 2**depth, batch_norm, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(
            base * 2**level, 2, strides=2, padding="same", name=f"up{level}_transpose"
        )(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"up{level}_dropout")(x)
        x = conv_block(x, base * 2**level, batch_norm, f"up{level}")
    # float32 even under a mixed-precision policy, so probabilities and losses keep full precision.
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name=f"unet_base{base}")


def conv_block(x, filters, batch_norm, name):
    """Two 3x3 convolutions, each followed by (batch norm and) ReLU."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{i}"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


@keras.saving.register_keras_serializable(package="medlab")
class StandardizeImage(layers.Layer):
    """Each image to zero mean and unit variance over its pixels (nnU-Net's normalisation of
    images whose grey levels have no fixed meaning), so that films of another exposure and
    contrast reach the first convolution alike. Inside the model, so that predict does it too."""

    def call(self, images):
        mean, variance = keras.ops.moments(images, axes=(1, 2, 3), keepdims=True)
        return (images - mean) * keras.ops.rsqrt(variance + STANDARDIZE_EPSILON)


# --------------------------------------------------------------------- training
# `learning_rate` (medlab.schedules, imported above) is the step size: constant or cosine.


def compile_unet(model, loss, lr, jit_compile=False):
    """Adam and the chosen loss; XLA only when asked (Keras' "auto" would turn it on for one GPU).
    `lr` is a number or a schedule from `learning_rate`."""
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=LOSSES[loss],
        jit_compile=jit_compile,
        metrics=[dice_coefficient, "binary_accuracy"],  # the same curves for every loss
    )
    return model


def train(model, train_data, val_data, epochs, run_dir, callbacks=(), verbose=None):
    """Fit `model`, logging `history.csv`, keeping the best checkpoint (validation Dice) as
    `best.keras`, and committing weights, optimizer state and history after every epoch
    (`medlab.checkpoints`), so a run killed at any moment resumes from its last complete epoch.

    Args:
        callbacks: more Keras callbacks (e.g. a TensorBoard logger), called after the checkpoint.
        verbose: Keras' verbosity; by default a progress bar on a terminal, a line per epoch in a
            log file.
    Returns:
        The training time in seconds, over every run of this experiment when it was resumed.
    Raises:
        UserError: a streamed file failed to decode.
    """
    checkpoint = EpochCheckpoint(run_dir, monitor="val_dice_coefficient", mode="max")
    options = {} if verbose is None else {"verbose": verbose}
    try:
        seconds = fit_resumable(
            model, train_data, val_data, epochs, checkpoint, callbacks, **options
        )
    except tf.errors.OpError as error:
        raise user_error_from_pipeline(error) from None
    distribute.to_this_process(model)  # evaluation and saving then need no other process
    return seconds


# ----------------------------------------------------------- metrics and losses
# Per-image scores with the semantics of the module docstring; `METRICS` are those every run
# reports (mean and standard deviation over images, `score_summary`).


METRICS = ("dice", "iou", "hd95", "precision", "recall")


def overlap_counts(truth, prediction):
    """True and false positives and false negatives per image of binary (N, H, W, 1) masks."""
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    axes = tuple(range(1, truth.ndim))
    tp = np.sum(truth & prediction, axis=axes)
    fp = np.sum(~truth & prediction, axis=axes)
    fn = np.sum(truth & ~prediction, axis=axes)
    return tp.astype(float), fp.astype(float), fn.astype(float)


def ratio(numerator, denominator, both_empty):
    """numerator/denominator per image; where the denominator is 0: 1 if both masks are empty,
    else 0."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.where(both_empty, 1.0, 0.0))


def similarity_scores(truth, prediction):
    """Per-image Dice, IoU, precision and recall of binary masks (see the module docstring), and the
    share of each image predicted as lung (`coverage`, for the collapse check)."""
    tp, fp, fn = overlap_counts(truth, prediction)
    both_empty = (tp + fp + fn) == 0
    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": ratio(tp, tp + fp + fn, both_empty),
        "precision": ratio(tp, tp + fp, both_empty),
        "recall": ratio(tp, tp + fn, both_empty),
        "coverage": (tp + fp) / truth[0].size,  # share of the image predicted as lung
    }


def boundary(mask):
    return mask & ~ndimage.binary_erosion(mask)


def hd95(truth, prediction):
    """Symmetric 95th-percentile Hausdorff distance (pixels) between two binary 2-D masks.

    The convention of MONAI's `compute_hausdorff_distance(percentile=95)`: the larger of the two
    directed 95th percentiles (truth boundary to prediction, prediction to truth). MedPy's `hd95`
    pools both directions' distances before taking one percentile, so it usually reads lower:
    compare with papers that use the same convention.
    """
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    if not truth.any() and not prediction.any():
        return 0.0
    if not truth.any() or not prediction.any():
        return float(np.hypot(*truth.shape))
    edge_t, edge_p = boundary(truth), boundary(prediction)
    to_p = ndimage.distance_transform_edt(~edge_p)[edge_t]
    to_t = ndimage.distance_transform_edt(~edge_t)[edge_p]
    return float(max(np.percentile(to_p, 95), np.percentile(to_t, 95)))


def score_summary(scores, prefix="val_"):
    summary = {}
    for metric in METRICS:
        summary[f"{prefix}{metric}"] = float(np.mean(scores[metric]))
        summary[f"{prefix}{metric}_std"] = float(np.std(scores[metric]))
    return summary


@keras.saving.register_keras_serializable(package="unet")
def dice_coefficient(y_true, y_pred):
    """Soft Dice per image, averaged over the batch (the lab's formula, smoothing 1)."""
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    axes = list(range(1, len(y_pred.shape)))
    overlap = keras.ops.sum(y_true * y_pred, axis=axes)
    total = keras.ops.sum(y_true, axis=axes) + keras.ops.sum(y_pred, axis=axes)
    return keras.ops.mean((2.0 * overlap + SOFT_DICE_SMOOTH) / (total + SOFT_DICE_SMOOTH))


@keras.saving.register_keras_serializable(package="unet")
def dice_loss(y_true, y_pred):
    """1 - soft Dice: optimises overlap directly, robust when lungs cover little of the image."""
    return 1.0 - dice_coefficient(y_true, y_pred)


@keras.saving.register_keras_serializable(package="unet")
def bce_dice_loss(y_true, y_pred):
    """BCE + (1 - soft Dice): BCE's per-pixel gradient never vanishes, so training cannot collapse
    to the empty mask the way pure Dice can, while the Dice term weighs the lung boundary."""
    bce = keras.ops.mean(
        keras.losses.binary_crossentropy(keras.ops.cast(y_true, y_pred.dtype), y_pred)
    )
    return bce + dice_loss(y_true, y_pred)


LOSSES = {
    "bce": keras.losses.BinaryCrossentropy(name="bce"),
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
}


# ------------------------------------------------------------------- evaluation


def evaluate_batches(model, batches, keep=8, postprocess=False, tta=False):
    """`evaluate` over a dataset of (images, masks) batches, holding one batch at a time.

    Returns the per-image scores and the first `keep` images, masks and predictions (for figures).
    Raises `UserError` when a streamed file fails to decode.
    """
    scores, shown = {}, ([], [], [])
    try:
        for images, masks in batches:
            images, masks = images.numpy(), masks.numpy()
            batch_scores, predictions = evaluate(
                model, images, masks, len(images), postprocess, tta
            )
            for metric, values in batch_scores.items():
                scores.setdefault(metric, []).append(values)
            for kept, arrays in zip(shown, (images, masks, predictions)):
                kept.extend(arrays[: keep - len(kept)])
    except tf.errors.OpError as error:
        raise user_error_from_pipeline(error) from None
    return {metric: np.concatenate(values) for metric, values in scores.items()}, tuple(
        map(np.array, shown)
    )


def evaluate(model, images, masks, batch_size=8, postprocess=False, tta=False):
    """Per-image Dice, IoU, precision, recall and HD95 of `model` (or of several models averaged,
    mirrored with `tta`: `predict_masks`) on `images` against `masks`."""
    predictions = predict_masks(model, images, batch_size, postprocess, tta)
    scores = similarity_scores(masks, predictions)
    scores["hd95"] = np.array([hd95(t[..., 0], p[..., 0]) for t, p in zip(masks, predictions)])
    return scores, predictions


def predict_probabilities(models, images, tta=False, batch_size=8):
    """Lung probabilities (N, H, W, 1) of `images` (N, H, W, 1): the mean over `models` (one model,
    or several, e.g. the fold models of a cross-validation) and, with `tta`, over each image and its
    left-right mirror image, whose prediction is mirrored back before averaging.

    Only the horizontal mirror: a mirrored chest still looks like a chest X-ray (lungs of similar
    shape, the heart's shadow on the other side; augmentation trains on such flips too), so the
    network's errors on the two views partly cancel. A film is never taken upside down, so a
    vertical flip would ask the network about images it was never meant to see.
    """
    images = np.asarray(images, dtype=np.float32)
    views = (False, True) if tta else (False,)
    total = np.zeros(images.shape[:3] + (1,), np.float32)
    models = as_models(models)
    for model in models:
        for mirrored in views:
            view = np.ascontiguousarray(images[:, :, ::-1]) if mirrored else images
            probabilities = model.predict(view, batch_size=batch_size, verbose=0)
            total += probabilities[:, :, ::-1] if mirrored else probabilities
    return total / (len(models) * len(views))


def as_models(models):
    """One Keras model or a sequence of them, as a list."""
    return list(models) if isinstance(models, (list, tuple)) else [models]


def predict_masks(model, images, batch_size=8, postprocess=False, tta=False):
    """Binary masks (N, H, W, 1) for `images`: the probabilities of `predict_probabilities` (one
    model or several, mirrored with `tta`) thresholded at 0.5, then cleaned by `keep_lungs` when
    `postprocess` is set."""
    probabilities = predict_probabilities(model, images, tta, batch_size)
    masks = (probabilities >= THRESHOLD).astype(np.float32)
    return keep_lungs(masks) if postprocess else masks


def predict_full_size(model, image, postprocess=False, tta=False):
    """The binary mask (H, W, 1) of one grey image (H, W, 1) in [0, 1] at its own size: the image
    is resized to the models' input, and the probabilities (averaged as `predict_probabilities`
    does) back to the image before thresholding."""
    size = as_models(model)[0].input_shape[1]
    probability = predict_probabilities(model, resize(image, (size, size))[None], tta)[0]
    mask = (resize(probability, image.shape[:2]) >= THRESHOLD).astype(np.float32)
    return keep_lungs(mask[None])[0] if postprocess else mask


def load_unet(path, compile=True):
    """A U-Net saved by `keras.Model.save` (its losses and metrics are registered here)."""
    return keras.models.load_model(path, compile=compile)


def keep_lungs(masks, keep=2):
    """Binary masks (N, H, W, 1) reduced to their `keep` largest connected components, holes filled.

    A chest X-ray has two lungs, each one solid region: specks elsewhere (shoulders, bowel gas) and
    holes over the heart or ribs are errors a pixel-wise network makes and anatomy rules out.
    """
    cleaned = np.zeros_like(masks)
    for i, mask in enumerate(masks[..., 0] >= THRESHOLD):
        labels, count = ndimage.label(mask)
        if count > keep:
            sizes = np.bincount(labels.ravel())[1:]
            mask = np.isin(labels, np.argsort(sizes)[::-1][:keep] + 1)
        cleaned[i, ..., 0] = ndimage.binary_fill_holes(mask)
    return cleaned


def collapsed(scores, masks_empty=False):
    """What the model collapsed to, judged on every validation image (not only those kept for the
    figures): "empty mask" when it finds no lung pixel in any image (recall 0 everywhere), "whole
    image" when it marks at least FULL_SHARE of every image as lung, else None (it has learnt)."""
    if np.all(scores["recall"] == 0) and not masks_empty:  # no lung to find: recall says nothing
        return "empty mask"
    if np.all(scores["coverage"] >= FULL_SHARE):
        return "whole image"
    return None


# ---------------------------------------------------------------------- figures


# Characters of a file name that fit above one 3.2-inch overlay panel at font size 8.
TITLE_CHARS = 36


def plot_overlays(images, masks, predictions, dice, path, names=None, count=8):
    """A grid of validation images with the true (green) and predicted (red) lung contours."""
    fig = overlay_figure(images, masks, predictions, dice, names, count)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay_figure(images, masks, predictions, dice, names=None, count=8):
    """The figure of `plot_overlays`; titles are shortened so long file names do not collide."""
    count = min(count, len(images))
    columns = min(4, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in zip(range(count), axes.ravel()):
        ax.imshow(images[i][..., 0], cmap="gray", vmin=0, vmax=1)
        ax.contour(masks[i][..., 0], levels=[0.5], colors="lime", linewidths=1)
        if predictions[i].any():
            ax.contour(predictions[i][..., 0], levels=[0.5], colors="red", linewidths=1)
        label = f"{fit_label(names[i], TITLE_CHARS)}\n" if names is not None else ""
        ax.set_title(f"{label}Dice {dice[i]:.3f}", fontsize=8)
    fig.suptitle("validation: truth (green) vs prediction (red)", fontsize=10)
    fig.tight_layout()
    return fig


def overlay_mask(image, mask):
    """An RGB picture of a grey image with the mask's area tinted red."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
    rgb[..., 0] = np.where(mask[..., 0] > 0, 0.6 * rgb[..., 0] + 0.4, rgb[..., 0])
    return rgb
