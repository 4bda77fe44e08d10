"""U-Net lung segmentation, one job per function: pairing, loading, splitting, augmentation,
metrics and losses, the model, training, evaluation and figures. `main_segmentation.py` holds the
parameters and calls these functions.

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

import json
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from scipy import ndimage

from medlab.app.collapse import print_bold
from medlab.app.runs import UserError, load_keras_model
from medlab.app.tensorboard_logs import epoch_logger, log_dir_for, write_hparams
from medlab.augment import augment_pair, augmented_batches
from medlab.distribute import SCALING_HELP
from medlab.images import (
    decode,
    list_images,
    load_all,
    load_image,
    resize,
    to_channels,
    to_unit_range,
)

THRESHOLD = 0.5
CACHE_MODES = ("auto", "memory", "disk", "none")
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


# ----------------------------------------------------------------------------- data


def find_pairs(data_dir):
    """Image and mask paths of `data_dir/{Image,Mask}`, paired by identical file stem, sorted."""
    data_dir = Path(data_dir)
    folders = {name: data_dir / name for name in ("Image", "Mask")}
    for _name, folder in folders.items():
        if not folder.is_dir():
            raise UserError(
                f"missing folder {folder}; put X-rays in {data_dir}/Image and lung masks "
                f"with the same file names in {data_dir}/Mask"
            )
    from medlab.app.checks import unique_stems

    by_stem = {name: unique_stems(list_images(folder), folder) for name, folder in folders.items()}
    for name, files in by_stem.items():
        if not files:
            raise UserError(f"folder {folders[name]} has no images (png, jpg, bmp, tif); add them")
    images, masks = by_stem["Image"], by_stem["Mask"]
    lonely_images, lonely_masks = sorted(images.keys() - masks), sorted(masks.keys() - images)
    if lonely_images or lonely_masks:
        show = lambda names: ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise UserError(
            f"images and masks in {data_dir} do not pair up by file name: "
            f"{len(lonely_images)} image(s) without a mask ({show(lonely_images)}), "
            f"{len(lonely_masks)} mask(s) without an image ({show(lonely_masks)}); "
            "give each image a mask with the same name"
        )
    stems = sorted(images)
    return [images[s] for s in stems], [masks[s] for s in stems]


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

    The mask is scaled by its own maximum (so 0/1 and 0/255 masks both work), resized by area
    averaging and thresholded at 0.5, which also removes JPEG noise.
    """
    mask = to_channels(to_unit_range(decode(path)), 1)[..., 0]
    peak = float(mask.max())
    if peak > 0:
        mask = mask / peak
        if looks_multi_label(mask):
            warn(
                f"warning: mask {path} has several grey levels; it is binarised at half its "
                "maximum, so check that it is a single lung mask"
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
    n_val = max(1, int(round(count * val_fraction)))
    if n_val >= count:
        raise UserError(
            f"only {count} image/mask pair(s): too few to keep {val_fraction:.0%} for "
            "validation; add pairs or lower --val-fraction"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


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


def batched(pairs, batch_size, augment, seed):
    """Batches of pairs, with one shared random transform per pair when `augment` is set."""
    dataset = augmented_batches(pairs, batch_size, augment_pair if augment else None, seed)
    options = tf.data.Options()
    # Pairs come from arrays or decoded file names, not from files TensorFlow can split between
    # workers, so each worker of a multi-worker run keeps its share of the elements.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


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


def decoded_gb(count, size):
    """GiB of `count` image/mask pairs decoded to float32 at size x size."""
    return count * size * size * 2 * 4 / 2**30


def choose_cache(mode, count, size, budget_gb):
    """`mode`, or for auto: memory when preloading fits `budget_gb`, else streaming (none)."""
    if mode != "auto":
        return mode
    needed = PRELOAD_COPIES * decoded_gb(count, size)
    choice = "memory" if needed <= budget_gb else "none"
    print(
        f"--cache auto: preloading {count} pairs at {size}x{size} would take about "
        f"{needed:.2f} GB, {'within' if choice == 'memory' else 'over'} the {budget_gb:g} GB "
        f"memory budget: --cache {choice}"
    )
    return choice


def pairs_dataset(data, part, batch_size, shuffle=False, augment=False, seed=0, cache_dir=None):
    """Batches of `data[part]` ("train" or "val") from `load_pairs`: preloaded or streamed."""
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


def user_error_from_pipeline(error):
    """A streamed file that fails to decode surfaces as a TensorFlow error; recover our one line."""
    marker = "UserError: "
    if marker in error.message:
        return UserError(error.message.split(marker, 1)[1].splitlines()[0])
    return error


# ----------------------------------------------------------------------------- metrics


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


# ----------------------------------------------------------------------------- model


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


def build_unet(input_shape=(256, 256, 1), base=8, depth=4, dropout=0.0, batch_norm=False):
    """The lab's U-Net: `depth` levels of base * 2**level filters, a bottleneck of base * 2**depth.

    Dropout (when > 0) follows every pooling and every skip concatenation; the decoder upsamples
    with Conv2DTranspose; the output is one sigmoid channel.
    """
    size = input_shape[0]
    if size % 2**depth or input_shape[1] % 2**depth:
        raise UserError(
            f"image size {input_shape[0]}x{input_shape[1]} must be divisible by "
            f"2**depth = {2**depth}; choose --size {size - size % 2**depth or 2**depth}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
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


# ----------------------------------------------------------------------------- training


def learning_rate(lr, schedule, total_steps):
    """`lr` as it is (constant), or a cosine decay from `lr` to 0 over `total_steps` training steps:
    the last epochs take small steps, so the final weights are settled rather than mid-jump."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    return lr


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


def train(model, train_data, val_data, epochs, run_dir, verbose=1):
    """Fit `model`, logging `history.csv`, keeping the best checkpoint (validation Dice) as
    `best.keras`, and committing weights, optimizer state and history after every epoch
    (`medlab.checkpoints`), so a run killed at any moment resumes from its last complete epoch.

    Returns the training time in seconds, over every run of this experiment when it was resumed.
    """
    from medlab.checkpoints import EpochCheckpoint

    checkpoint = EpochCheckpoint(run_dir, monitor="val_dice_coefficient", mode="max")
    done = checkpoint.restore(model)
    if done:
        print(
            f"resuming {Path(run_dir).name} after epoch {done} of {epochs}: weights, optimizer "
            f"state and {done} history rows restored from {Path(run_dir) / 'backup'}"
        )
    if done < epochs:
        for _ in range(
            done
        ):  # each new pass moves the shuffling and augmentation seeds on: replay them
            iter(train_data)
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=epochs,
            initial_epoch=done,
            callbacks=[checkpoint, epoch_logger(log_dir_for(run_dir))],
            verbose=verbose,
            shuffle=False,  # the dataset shuffles itself
        )
    return checkpoint.seconds()


def predict_masks(model, images, batch_size=8, postprocess=False):
    """Binary masks (N, H, W, 1) for `images`, the sigmoid output thresholded at 0.5, then cleaned
    by `keep_lungs` when `postprocess` is set."""
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    masks = (probabilities >= THRESHOLD).astype(np.float32)
    return keep_lungs(masks) if postprocess else masks


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


def evaluate(model, images, masks, batch_size=8, postprocess=False):
    """Per-image Dice, IoU, precision, recall and HD95 of `model` on `images` against `masks`."""
    predictions = predict_masks(model, images, batch_size, postprocess)
    scores = similarity_scores(masks, predictions)
    scores["hd95"] = np.array([hd95(t[..., 0], p[..., 0]) for t, p in zip(masks, predictions)])
    return scores, predictions


def evaluate_batches(model, batches, keep=8, postprocess=False):
    """`evaluate` over a dataset of (images, masks) batches, holding one batch at a time.

    Returns the per-image scores and the first `keep` images, masks and predictions (for figures).
    """
    scores, shown = {}, ([], [], [])
    for images, masks in batches:
        images, masks = images.numpy(), masks.numpy()
        batch_scores, predictions = evaluate(model, images, masks, len(images), postprocess)
        for metric, values in batch_scores.items():
            scores.setdefault(metric, []).append(values)
        for kept, arrays in zip(shown, (images, masks, predictions)):
            kept.extend(arrays[: keep - len(kept)])
    return {metric: np.concatenate(values) for metric, values in scores.items()}, tuple(
        map(np.array, shown)
    )


def collapsed(scores, masks_empty=False):
    """What the model collapsed to, judged on every validation image (not only those kept for the
    figures): "empty mask" when it finds no lung pixel in any image (recall 0 everywhere), "whole
    image" when it marks at least FULL_SHARE of every image as lung, else None (it has learnt)."""
    if np.all(scores["recall"] == 0) and not masks_empty:  # no lung to find: recall says nothing
        return "empty mask"
    if np.all(scores["coverage"] >= FULL_SHARE):
        return "whole image"
    return None


def collapse_message(name, kind, count, loss="bce"):
    """The sentence that says what a collapsed experiment predicts, why, and what to run instead."""
    if kind == "empty mask":
        cause = (
            "Dice loss does this when a high learning rate saturates the sigmoid (its gradient "
            "then vanishes, unlike BCE's); rerun"
            if "dice" in loss
            else "Rerun"
        )
        return (
            f"{name} predicts no lung in any of its {count} validation images: it has collapsed "
            f"to the empty mask and has not learnt the task. {cause} with a lower --lr, or run "
            "--experiments best."
        )
    return (
        f"{name} marks (almost) the whole image as lung in all {count} validation images: it has "
        "collapsed to the full mask and has not learnt the task. Check that the masks show the "
        "lungs white on black (inverted masks teach exactly this), then rerun with a lower --lr, "
        "or run "
        "--experiments best."
    )


# ----------------------------------------------------------------------------- figures

# Characters of a file name that fit above one 3.2-inch overlay panel at font size 8.
TITLE_CHARS = 36


def plot_overlays(images, masks, predictions, dice, path, names=None, count=8):
    """A grid of validation images with the true (green) and predicted (red) lung contours."""
    import matplotlib.pyplot as plt

    fig = overlay_figure(images, masks, predictions, dice, names, count)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay_figure(images, masks, predictions, dice, names=None, count=8):
    """The figure of `plot_overlays`; titles are shortened so long file names do not collide."""
    import matplotlib.pyplot as plt

    from medlab.plots import fit_label

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


# ----------------------------------------------------------------------------- experiments

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
}
METRICS = ("dice", "iou", "hd95", "precision", "recall")
LR_SCHEDULES = ("constant", "cosine")
# Parameters newer than the first runs.json plans: an older plan (resumed) or a partial block gets
# the lab's behaviour.
ADDED_PARAMETERS = {"lr_schedule": "constant", "postprocess": False}


def check_parameters(p):
    """Reject nonsense parameters with a one-line message before any work starts."""
    from medlab.app.cli import check_range
    from medlab.distribute import check_scaling

    p = {**ADDED_PARAMETERS, **p}
    if p["loss"] not in LOSSES:
        raise UserError(f"--loss {p['loss']} is unknown; choose one of {', '.join(LOSSES)}")
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
    check_training_memory(p)


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


def locate_data(parameters, flags, demo):
    """The data folder and whether it is the synthetic demo set (then demo settings apply)."""
    from medlab.synthetic.common import synthetic_banner
    from medlab.synthetic.xray import synthetic_xray_set

    if "data_dir" in flags or Path(parameters["data_dir"]).exists():
        return Path(flags.get("data_dir", parameters["data_dir"])), {}
    settings = {k: v for k, v in demo.items() if k != "pairs"}
    seed = flags.get("seed", parameters["seed"])
    folder = synthetic_xray_set(count=demo["pairs"], seed=seed)
    shown = {**settings, **{k: v for k, v in flags.items() if k in settings}}
    synthetic_banner(
        f"{demo['pairs']} generated chest X-rays (no {parameters['data_dir']} found)",
        folder,
        ", ".join(f"{k}={v}" for k, v in shown.items()),
    )
    return folder, settings


def load_pairs(data_dir, size, val_fraction, seed, cache="memory", memory_budget_gb=4.0):
    """The pairs of `data_dir` split into training and validation: decoded at `size` (cache memory),
    or as file paths for `pairs_dataset` to stream (cache none or disk; auto picks by size)."""
    every = load_every_pair(data_dir, size, cache, memory_budget_gb)
    return split_pairs(every, *split_indices(len(every["names"]), val_fraction, seed))


def load_every_pair(data_dir, size, cache="memory", memory_budget_gb=4.0):
    """All pairs of `data_dir`, decoded at `size` (cache memory) or as file paths (none or disk),
    for `split_pairs` to divide into training and validation (once, or once per fold)."""
    from medlab.app.checks import check_pairs

    image_paths, mask_paths = find_pairs(data_dir)
    # Every file is decoded once here, so a bad one stops the run before anything is written.
    masks_empty = check_pairs(image_paths, mask_paths)
    cache = choose_cache(cache, len(image_paths), size, memory_budget_gb)
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
    """The data of `load_pairs` for one split of `load_every_pair`'s pairs."""
    parts = {
        part: tuple(
            list(array[idx]) if array.dtype == object else array[idx] for array in every["pairs"]
        )
        for part, idx in (("train", train_idx), ("val", val_idx))
    }
    print(
        f"{len(every['names'])} pairs from {every['data_dir']}: {len(train_idx)} training, "
        f"{len(val_idx)} validation (--cache {every['cache']})"
    )
    return {
        **parts,
        "val_names": [every["names"][i] for i in val_idx],
        **{
            key: every[key]
            for key in ("data_dir", "masks_empty", "cache", "size", "shuffle_buffer")
        },
    }


def fold_indices(count, folds, seed):
    """`folds` seeded (train, held-out) index pairs; every pair is held out by exactly one fold."""
    if folds > count:
        raise UserError(
            f"--folds {folds} needs at least {folds} image/mask pairs, but there are {count}; "
            "lower --folds or add pairs"
        )
    fold_of = np.empty(count, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(count)] = np.arange(count) % folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]


def experiment_datasets(p, data, batch_size, cache_dir=None):
    """Training (shuffled, augmented when asked) and validation batches of `batch_size` pairs."""
    return (
        pairs_dataset(
            data,
            "train",
            batch_size,
            shuffle=True,
            augment=p["augment"],
            seed=p["seed"],
            cache_dir=cache_dir,
        ),
        pairs_dataset(data, "val", batch_size, cache_dir=cache_dir),
    )


def fit_experiment(p, datasets, run_dir, scaling):
    """A fresh U-Net trained under `scaling`'s strategy; returns it and the training seconds."""
    p = {**ADDED_PARAMETERS, **p}
    steps = p["epochs"] * int(datasets[0].cardinality())
    with scaling.scope():
        model = compile_unet(
            build_unet(
                (p["size"], p["size"], 1), p["base"], p["depth"], p["dropout"], p["batch_norm"]
            ),
            p["loss"],
            learning_rate(p["lr"], p["lr_schedule"], steps),
            jit_compile=scaling.jit,
        )
    try:
        seconds = train(
            model, *datasets, p["epochs"], run_dir, verbose=1 if sys.stdout.isatty() else 2
        )
    except tf.errors.OpError as error:
        raise user_error_from_pipeline(error) from None
    from medlab.atomic import save_model_atomic

    save_model_atomic(model, run_dir / "model.keras")
    return model, seconds


def score_summary(scores, prefix="val_"):
    summary = {}
    for metric in METRICS:
        summary[f"{prefix}{metric}"] = float(np.mean(scores[metric]))
        summary[f"{prefix}{metric}_std"] = float(np.std(scores[metric]))
    return summary


def run_experiment(name, p, data, run_dir, scaling, cache_dir=None):
    """Train, evaluate and draw one experiment into `run_dir`; returns its metrics."""
    p = {**ADDED_PARAMETERS, **p}
    from medlab.app.runs import save_config, set_seed
    from medlab.plots import plot_curves, read_history

    print(f"\n=== experiment {name} -> {run_dir}")
    save_config(
        run_dir,
        {
            "experiment": name,
            **p,
            "data_dir": data["data_dir"],
            "cache_used": data["cache"],
            "replicas": scaling.replicas,
        },
    )
    set_seed(p["seed"])
    datasets = experiment_datasets(p, data, scaling.global_batch(p["batch_size"]), cache_dir)
    model, seconds = fit_experiment(p, datasets, run_dir, scaling)
    scores, (images, masks, predictions) = evaluate_batches(
        model, datasets[1], postprocess=p["postprocess"]
    )
    best_scores, _ = evaluate_batches(
        keras.models.load_model(run_dir / "best.keras"), datasets[1], postprocess=p["postprocess"]
    )
    history = read_history(run_dir / "history.csv")
    best_epoch = int(np.argmax(history["val_dice_coefficient"])) + 1
    metrics = {
        "experiment": name,
        **score_summary(scores),
        "epochs": len(history["loss"]),
        "train_seconds": round(seconds, 1),
        "validation_images": len(scores["dice"]),
        "best_checkpoint": {
            "epoch": best_epoch,
            **score_summary(best_scores),
            "note": "epoch chosen on the validation set: optimistic",
        },
    }
    if p["postprocess"]:
        metrics["without_postprocess"] = score_summary(evaluate_batches(model, datasets[1])[0])
    metrics["collapsed_to"] = collapsed(scores, masks_empty=data.get("masks_empty", False))
    metrics["collapsed"] = metrics["collapsed_to"] is not None
    if metrics["collapsed"]:
        message = collapse_message(name, metrics["collapsed_to"], len(scores["dice"]), p["loss"])
        print_bold(f"warning: {message}")
    write_per_image(run_dir / "per_image.csv", data["val_names"], scores)
    plot_curves(
        {name: history},
        run_dir / "curves.png",
        metrics=("loss", "dice_coefficient"),
        titles={"loss": f"loss ({p['loss']})", "dice_coefficient": "soft Dice"},
    )
    plot_overlays(
        images, masks, predictions, scores["dice"], run_dir / "overlays.png", data["val_names"]
    )
    write_hparams(
        log_dir_for(run_dir),
        {"experiment": name, **p},
        metrics,
        f"{run_dir.parent.name}/{run_dir.name}",
    )
    finish_experiment(run_dir, metrics)
    print(
        f"{name}: validation Dice {metrics['val_dice']:.3f} +- {metrics['val_dice_std']:.3f}, "
        f"HD95 {metrics['val_hd95']:.1f} px ({seconds:.0f} s)"
    )
    if p["postprocess"]:
        raw = metrics["without_postprocess"]
        print(
            f"{name}: without --postprocess: Dice {raw['val_dice']:.3f}, "
            f"HD95 {raw['val_hd95']:.1f} px"
        )
    return metrics, scores


def finish_experiment(run_dir, metrics):
    """metrics.json last, as the mark of a complete experiment (resume skips it), then the backup,
    which only an unfinished experiment needs, goes."""
    from medlab.app.faults import crash_point
    from medlab.app.runs import mark_complete, write_json

    crash_point("before-metrics")
    write_json(run_dir / "metrics.json", metrics)
    mark_complete(run_dir)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)


def write_summary(
    summary_dir,
    runs,
    settings=("loss", "dropout", "base", "batch_norm", "augment"),
    comparisons=(),
    seed=0,
):
    """Compare the experiments of one invocation: summary.csv, summary.md, summary.json, a Dice bar
    chart, and the paired `comparisons` (comparisons.csv and one figure of overlaid curves each)."""
    import os

    from medlab.app.report import markdown_table
    from medlab.app.runs import write_json
    from medlab.plots import plot_spread, write_csv

    rows = []
    for name, (metrics, _, run_dir, p) in runs.items():
        rows.append(
            {
                "experiment": name,
                **{key: p.get(key, "") for key in settings},
                "postprocess": p.get("postprocess", False),
                **{k: v for k, v in metrics.items() if k.startswith(("val_", "folds_"))},
                "best_val_dice": metrics["best_checkpoint"]["val_dice"],
                "epochs": metrics["epochs"],
                "train_seconds": metrics["train_seconds"],
                "collapsed": metrics.get("collapsed", False),
                "collapsed_to": collapse_kind(metrics),
                "validation_images": metrics["validation_images"],
                "folder": os.path.relpath(run_dir, summary_dir),
            }
        )
    columns = list(dict.fromkeys(column for row in rows for column in row))
    write_csv(summary_dir / "summary.csv", rows, columns)
    plot_spread(
        {name: scores["dice"] for name, (_, scores, _, _) in runs.items()},
        summary_dir / "dice.png",
        "validation Dice per image",
        "final models, threshold 0.5",
    )
    folds = [c for c in ("folds_dice_mean", "folds_dice_std") if c in columns]
    shown = [
        "experiment",
        *settings,
        "val_dice",
        "val_dice_std",
        *folds,
        "val_iou",
        "val_hd95",
        "val_precision",
        "val_recall",
        "best_val_dice",
        "epochs",
        "train_seconds",
    ]
    table = markdown_table(
        rows, shown, {c: ".3f" for c in shown if c.startswith(("val_", "best_", "folds_"))}
    )
    figures = "\n\n".join(
        f"### {r['experiment']}\n\n![curves]({r['folder']}/curves.png)\n"
        f"![overlays]({r['folder']}/overlays.png)"
        for r in rows
        if not folds
    )
    compared, comparison_data = write_comparisons(summary_dir, runs, comparisons, seed)
    write_json(
        summary_dir / "summary.json",
        {"runs": {name: run[0] for name, run in runs.items()}, **comparison_data},
    )
    data_note = runs[next(iter(runs))][3]["data_dir"]
    cleaned = [r["experiment"] for r in rows if r["postprocess"]]
    if cleaned:
        data_note += (
            f"`. {', '.join(cleaned)} ran with `--postprocess`: their scores are those of the "
            "cleaned masks; their metrics.json also holds the scores without it "
            "(`without_postprocess`"
        )
    warning = "".join(
        "\n\n**Collapsed: "
        f"{collapse_message(r['experiment'], r['collapsed_to'], r['validation_images'])}**"
        for r in rows
        if r["collapsed"]
    )
    (summary_dir / "summary.md").write_text(
        "# U-Net lung segmentation: experiment summary\n\n"
        f"Data: `{data_note}`. {scored_images_note(bool(folds))}"
        "`best_val_dice` is the checkpoint with the best validation Dice; "
        f"the epoch was chosen on the same images, so it is optimistic.{warning}\n\n"
        f"{table}\n\n![Dice per image](dice.png)\n\n{compared}{figures}\n"
    )


def scored_images_note(folds):
    if folds:
        return (
            "Cross-validated: every image was scored once, by the model of the fold that held it "
            "out; `val_*` are per-image means (and standard deviations) over all images pooled, "
            "`folds_dice_*` the mean and standard deviation of the folds' mean Dice. Final models "
            "at threshold 0.5. "
        )
    return (
        "Scores are per-image means (and standard deviations) over the validation images, for the "
        "model after the last epoch at threshold 0.5. "
    )


def collapse_kind(metrics):
    """`collapsed_to` of a run's metrics; runs written before it only knew the empty mask."""
    if "collapsed_to" in metrics:
        return metrics["collapsed_to"]
    return "empty mask" if metrics.get("collapsed") else None


def summary_folder(out, resume):
    """A new folder for this invocation (or the one being resumed) and the stamp its runs share."""
    from medlab.app.runs import new_run_dir

    if resume:
        folder = Path(resume)
        if not (folder / "runs.json").is_file():
            raise UserError(
                f"{folder} is not a summary folder of an earlier run (no runs.json); "
                "pass the *-summary folder that the interrupted run printed"
            )
        return folder
    return new_run_dir(out, "summary")


def run_command_line(argv, parameters, experiments, demo, comparisons=(), default_experiments=None):
    """The script's entry point; `default_experiments` run without --experiments (all if None)."""
    from medlab.app.runs import main_guard

    main_guard(_run, lower="--batch-size, --size or --base")(
        argv, parameters, experiments, demo, comparisons, default_experiments
    )


def parse_arguments(argv, parameters, experiments, default=None):
    from medlab.app.cli import Parser, add_parameter_flags

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


def _run(argv, parameters, experiments, demo, comparisons=(), default_experiments=None):
    from medlab.app.cli import typed_flags
    from medlab.app.runs import mark_complete, write_json
    from medlab.comparisons import check_names, parse_compare
    from medlab.distribute import configure_scaling

    if argv and argv[0] == "predict":
        return predict_command(argv[1:], parameters)
    if argv and argv[0] == "evaluate":
        return evaluate_command(argv[1:], parameters)
    args = parse_arguments(argv, parameters, experiments, default_experiments)
    flags = typed_flags(args, parameters)
    comparisons = [
        *check_names(comparisons, experiments, "the COMPARISONS block:"),
        *parse_compare(args.compare, experiments),
    ]
    if args.resume:
        plan = resume_plan(args, flags, parameters)
    else:
        data_dir, demo_settings = locate_data(parameters, flags, demo)
        plan = {
            name: {
                **parameters,
                **demo_settings,
                **experiments[name],
                **flags,
                "data_dir": str(data_dir),
            }
            for name in choose_experiments(args.experiments, experiments, default_experiments)
        }
    for p in plan.values():
        check_parameters(p)
    first = next(iter(plan.values()))
    scaling = configure_scaling(
        first["strategy"], first["mixed_precision"], first["jit"], first["batch_size"]
    )
    every = load_every_pair(
        first["data_dir"], first["size"], first["cache"], first["memory_budget_gb"]
    )
    splits = data_splits(len(every["names"]), first)
    summary_dir = summary_folder(first["out"], args.resume)  # only once the data proved good
    stamp = summary_dir.name.removesuffix("-summary")
    write_json(summary_dir / "runs.json", plan)
    cache_dir = fresh_folder(summary_dir / "cache") if every["cache"] == "disk" else None
    runs = {}
    for name, p in plan.items():
        run_dir = summary_dir.parent / f"{stamp}-{name}"
        if len(splits) > 1:
            metrics, scores = run_folds(
                name, p, every, splits, run_dir, scaling, cache_dir, bool(args.resume)
            )
        else:
            metrics, scores = run_or_reload(
                name,
                p,
                split_pairs(every, *splits[0]),
                run_dir,
                scaling,
                cache_dir,
                bool(args.resume),
            )
        runs[name] = (metrics, scores, run_dir, p)
    write_summary(summary_dir, runs, setting_keys(experiments), comparisons, first["seed"])
    if cache_dir is not None:
        shutil.rmtree(cache_dir)  # as large as the decoded data set; rebuilt if ever needed
    mark_complete(summary_dir)
    print(f"\nsummary: {summary_dir / 'summary.md'}")


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
    return plan


def fresh_folder(path):
    """An empty folder at `path`: a cache left by an interrupted run is incomplete and locked."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def reload_run(run_dir):
    import csv

    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return metrics, {
        **{m: np.array([float(r[m]) for r in rows]) for m in METRICS},
        "image": [r["image"] for r in rows],
    }


def predict_command(argv, parameters):
    """`predict MODEL IMAGE...`: binary masks at each image's own size, and overlays."""
    from medlab.app.cli import Parser
    from medlab.app.runs import mark_complete, new_run_dir
    from medlab.images import save_image

    parser = Parser(
        prog="main_segmentation.py predict",
        description="Segment new chest X-rays with a saved U-Net.",
    )
    parser.add_argument("model", help="a model.keras written by an experiment")
    parser.add_argument("images", nargs="+", help="image files (png, jpg, bmp, tif)")
    parser.add_argument(
        "--out", default=parameters["out"], help="folder for the new predict-* folder"
    )
    parser.add_argument("--postprocess", action="store_true", help=HELP["postprocess"])
    args = parser.parse_args(argv)
    for path in args.images:  # all checked before any folder is made (decoded again below)
        decode(path)
    model = load_keras_model(args.model, "main_segmentation.py")
    check_segmentation_model(model, args.model)
    size = model.input_shape[1]
    out_dir = new_run_dir(args.out, "predict")
    for path in map(Path, args.images):
        original = to_channels(to_unit_range(decode(path)), 1)
        probability = model.predict(resize(original, (size, size))[None], verbose=0)[0]
        mask = (resize(probability, original.shape[:2]) >= THRESHOLD).astype(np.float32)
        if args.postprocess:
            mask = keep_lungs(mask[None])[0]
        save_image(out_dir / f"{path.stem}_mask.png", mask)
        save_image(out_dir / f"{path.stem}_overlay.png", overlay_mask(original, mask))
        print(f"{path}: lung area {mask.mean():.1%} of the image")
    mark_complete(out_dir)
    print(f"masks and overlays: {out_dir}")


def check_segmentation_model(model, path):
    """A model mapping a square grey image to a same-size one-channel mask, as experiments save."""
    inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    if len(inputs) != 4 or inputs[3] != 1 or outputs != inputs:
        raise UserError(
            f"model {path} is not a segmentation model (it maps {inputs[1:]} to {outputs[1:]}, "
            "not an image to a mask of its size); pass a model.keras written by "
            "main_segmentation.py"
        )


# ------------------------------------------------------------------------- evidence: comparisons,
# cross-validation and scoring a saved model

# Metrics of the paired comparisons: (per-image score, its words, higher is better).
COMPARED = (("dice", "Dice", True), ("hd95", "px HD95", False))
# Panels of the overlaid learning curves: every run logs these, whatever its loss.
CURVE_PANELS = {
    "loss": "loss (each run's own)",
    "dice_coefficient": "soft Dice",
    "binary_accuracy": "pixel accuracy",
}


def setting_keys(experiments):
    """Every parameter some experiment sets, in order of first appearance: the settings columns."""
    return list(dict.fromkeys(key for settings in experiments.values() for key in settings))


def check_folds(folds):
    if folds < 0 or folds == 1:
        raise UserError(
            f"--folds {folds} is not cross-validation; use 0 (the --val-fraction split) or K >= 2"
        )


def data_splits(count, p):
    """[(train, validation)] indices: the seeded split, or the seeded folds when --folds K >= 2."""
    if p.get("folds", 0) >= 2:
        return fold_indices(count, p["folds"], p["seed"])
    return [split_indices(count, p["val_fraction"], p["seed"])]


def write_per_image(path, names, scores, columns=METRICS):
    from medlab.plots import write_csv

    write_csv(
        path,
        [{"image": n, **{m: scores[m][i] for m in columns}} for i, n in enumerate(names)],
        ["image", *columns],
    )


def reload_if_complete(name, run_dir, resume):
    """The saved results of a run an earlier invocation completed, else None once `run_dir` is
    made and marked incomplete for the run about to start."""
    from medlab.app.runs import mark_complete, mark_incomplete

    if (run_dir / "metrics.json").is_file():
        print(f"{name}: already complete in {run_dir}")
        mark_complete(run_dir)  # in case the kill came between metrics.json and this mark
        return reload_run(run_dir)
    run_dir.mkdir(exist_ok=resume)
    mark_incomplete(run_dir)
    return None


def run_or_reload(name, p, data, run_dir, scaling, cache_dir=None, resume=False):
    """The metrics and per-image scores (with their image names) of one run: trained now, or read
    back when an earlier invocation completed it."""
    finished = reload_if_complete(name, run_dir, resume)
    if finished:
        return finished
    metrics, scores = run_experiment(name, p, data, run_dir, scaling, cache_dir)
    return metrics, {**scores, "image": data["val_names"]}


def run_folds(name, p, every, splits, run_dir, scaling, cache_dir=None, resume=False):
    """One run per fold in run_dir/fold<k>, then every held-out image's scores pooled (each image is
    scored once, by the model that did not see it) and the mean +- std over folds reported.
    `--resume` keeps the folds already complete."""
    from medlab.app.runs import mark_complete, write_json

    finished = reload_if_complete(name, run_dir, resume)
    if finished:
        return finished
    results = []
    for k, split in enumerate(splits, 1):
        fold_cache = fresh_folder(cache_dir / f"fold{k}") if cache_dir is not None else None
        results.append(
            run_or_reload(
                f"{name}-fold{k}",
                p,
                split_pairs(every, *split),
                run_dir / f"fold{k}",
                scaling,
                fold_cache,
                resume,
            )
        )
    metrics, scores = pooled_folds(name, results)
    write_mean_history(
        run_dir / "history.csv",
        [run_dir / f"fold{k}" / "history.csv" for k in range(1, len(splits) + 1)],
    )
    write_per_image(run_dir / "per_image.csv", scores["image"], scores)
    write_json(run_dir / "metrics.json", metrics)  # last: the mark of a complete experiment
    mark_complete(run_dir)
    print(
        f"{name}: {len(splits)}-fold Dice {metrics['folds_dice_mean']:.3f} "
        f"+- {metrics['folds_dice_std']:.3f} over folds; pooled over "
        f"{metrics['validation_images']} images {metrics['val_dice']:.3f}"
    )
    return metrics, scores


def pooled_folds(name, results):
    """Metrics of the folds' (metrics, scores) results: per-image scores pooled, per-fold means."""
    scores = {m: np.concatenate([s[m] for _, s in results]) for m in METRICS}
    scores["image"] = [n for _, s in results for n in s["image"]]
    per_fold = {m: [fold[f"val_{m}"] for fold, _ in results] for m in METRICS}
    best = [fold["best_checkpoint"]["val_dice"] for fold, _ in results]
    return {
        "experiment": name,
        **score_summary(scores),
        **{
            f"folds_{m}_{stat}": float(f(per_fold[m]))
            for m in METRICS
            for stat, f in (("mean", np.mean), ("std", np.std))
        },
        "folds": len(results),
        "epochs": results[0][0]["epochs"],
        "train_seconds": round(sum(fold["train_seconds"] for fold, _ in results), 1),
        "validation_images": len(scores["image"]),
        "best_checkpoint": {
            "val_dice": float(np.mean(best)),
            "note": "mean over folds of each fold's best "
            "checkpoint, its epoch chosen on the held-out images: optimistic",
        },
        "collapsed": any(fold.get("collapsed", False) for fold, _ in results),
    }, scores


def write_mean_history(path, fold_histories):
    """The folds' learning curves averaged epoch by epoch (the curve of a cross-validated run)."""
    from medlab.plots import read_history, write_csv

    histories = [read_history(h) for h in fold_histories]
    epochs = min(len(h["loss"]) for h in histories)
    keys = [k for k in histories[0] if k != "epoch" and all(k in h for h in histories)]
    rows = [
        {"epoch": e, **{k: float(np.mean([h[k][e] for h in histories])) for k in keys}}
        for e in range(epochs)
    ]
    write_csv(path, rows, ["epoch", *keys])


def write_comparisons(summary_dir, runs, comparisons, seed):
    """The paired comparisons of the runs made: comparisons.csv, a figure each, their Markdown."""
    from medlab.comparisons import (
        compare_runs,
        comparison_figure,
        comparison_rows,
        comparisons_markdown,
        select_comparisons,
        with_two_run_default,
    )
    from medlab.plots import read_history, write_csv

    kept, notes = select_comparisons(with_two_run_default(comparisons, runs), runs)
    results, skipped = compare_runs(
        kept, {name: run[1] for name, run in runs.items()}, COMPARED, seed
    )
    notes += skipped
    for result in results:
        first, second = result["first"], result["second"]
        result["figure"] = f"compare-{first}-vs-{second}.png"
        histories = {name: read_history(runs[name][2] / "history.csv") for name in (first, second)}
        comparison_figure(
            histories,
            summary_dir / result["figure"],
            first,
            second,
            result["question"],
            CURVE_PANELS,
        )
    rows = comparison_rows(results)
    if rows:
        write_csv(summary_dir / "comparisons.csv", rows, list(rows[0]))
    return comparisons_markdown(results, notes), {"comparisons": results, "comparison_notes": notes}


def evaluate_command(argv, parameters):
    """`evaluate MODEL --data-dir DIR`: a saved U-Net scored on every pair in a folder."""
    from medlab.app.cli import Parser
    from medlab.app.runs import mark_complete, new_run_dir, save_config, write_json

    parser = Parser(
        prog="main_segmentation.py evaluate",
        description="Score a saved U-Net on a folder of X-rays and lung masks.",
    )
    parser.add_argument("model", help="a model.keras (or best.keras) written by an experiment")
    parser.add_argument(
        "--data-dir", required=True, help="folder with Image/ and Mask/ (identical file names)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=parameters["batch_size"],
        help="images per prediction step",
    )
    parser.add_argument(
        "--out", default=parameters["out"], help="folder for the new evaluate-* folder"
    )
    args = parser.parse_args(argv)
    model = load_keras_model(args.model, "main_segmentation.py", compile=False)
    check_segmentation_model(model, args.model)
    every = load_every_pair(
        args.data_dir, model.input_shape[1], "auto", parameters["memory_budget_gb"]
    )
    out_dir = new_run_dir(args.out, "evaluate")  # only once model and data proved good
    save_config(
        out_dir, {"model": str(args.model), "data_dir": str(args.data_dir), "size": every["size"]}
    )
    try:
        scores, (images, masks, predictions) = evaluate_batches(
            model, pairs_dataset({**every, "val": every["pairs"]}, "val", max(1, args.batch_size))
        )
    except tf.errors.OpError as error:
        raise user_error_from_pipeline(error) from None
    metrics = {
        **score_summary(scores, prefix=""),
        "images": len(every["names"]),
        "model": str(args.model),
    }
    write_json(out_dir / "metrics.json", metrics)
    write_per_image(out_dir / "per_image.csv", every["names"], scores)
    plot_overlays(
        images, masks, predictions, scores["dice"], out_dir / "overlays.png", every["names"]
    )
    mark_complete(out_dir)
    print(
        f"{args.model} on {len(every['names'])} pairs of {args.data_dir}: "
        f"Dice {metrics['dice']:.3f} +- {metrics['dice_std']:.3f}, IoU {metrics['iou']:.3f}, "
        f"HD95 {metrics['hd95']:.1f} px, precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}\nscores and overlays: {out_dir}"
    )
