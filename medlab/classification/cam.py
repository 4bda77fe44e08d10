"""Task 3's Keras side (`cam_vgg16.py`): the lab's VGG16-style classifier and its training, Grad-CAM
maps of every validation image, how faithful the maps are to a known region, the sanity checks of
Adebayo et al. (2018), and the figures that show them.

`params` is the script's parameter dictionary (size, channels, base, lr, epochs, ...); the
functions here never print advice or name command-line flags.
"""

import cv2
import keras
import matplotlib
import numpy as np
import tensorflow as tf

from medlab.classification.gradcam import (
    as_rgb,
    class_map_correlation,
    energy_inside,
    overlay,
    pointing_hit,
    randomisation_test,
    upsample,
)
from medlab.classification.train import (
    class_weights,
    compile_classifier,
    image_dataset,
)
from medlab.classification.vgg import build_vgg16_style
from medlab.schedules import learning_rate

matplotlib.use("Agg")  # files only: the scripts run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402

# Maps that survive re-initialising every weight, or that look alike for both classes, describe the
# image rather than what was learnt (rank correlation at or above this: the check fails).
SANITY_CORRELATION_LIMIT = 0.5


# ---------------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------------
def build_model(params, steps_per_epoch=None, jit_compile=False):
    """The lab's VGG16-style network, optionally fed centred pixels (`vgg.CENTRING`), compiled.

    `steps_per_epoch` (batches per epoch) is needed by the cosine schedule, which spans the run."""
    model = build_vgg16_style(
        (params["size"], params["size"], params["channels"]),
        base=params["base"],
        n_classes=2,
        dropout=params["dropout"],
        batch_norm=params["batch_norm"],
        pooling=params["pooling"],
        centre=params["centre"],
        colour_constancy=params["colour_constancy"],
    )
    total_steps = params["epochs"] * steps_per_epoch if steps_per_epoch else None
    lr = learning_rate(params["lr"], params["lr_schedule"], total_steps)
    return compile_classifier(model, lr, jit_compile=jit_compile)


def training_dataset(images, labels, params):
    """Shuffled batches, each image with its own random rotation, shift, zoom, flip and colour."""
    augment = {
        "rotation": params["rotation"],
        "shift": params["shift"],
        "zoom": params["zoom"],
        "flip": params["flip"],
        "colour": params["colour_jitter"],
    }
    return image_dataset(
        images,
        tf.one_hot(labels, 2),
        params["batch_size"],
        shuffle=True,
        augment=augment,
        seed=params["seed"],
    )


def validation_dataset(images, labels, params):
    return image_dataset(images, tf.one_hot(labels, 2), params["batch_size"])


def train(model, train_data, val_data, params, run_dir, labels, callbacks=()):
    """Fit for `params["epochs"]` epochs, logging each to run_dir/history.csv and to the caller's
    `callbacks` (the script's TensorBoard logger)."""
    # shuffle=False: the tf.data pipeline already reshuffles every epoch.
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=params["epochs"],
        verbose=2,
        shuffle=False,
        class_weight=class_weights(labels, params["class_weight"]),
        callbacks=[keras.callbacks.CSVLogger(str(run_dir / "history.csv")), *callbacks],
    )


def release_models():
    """Free the models of a finished run (a test or notebook may run several in one process)."""
    keras.backend.clear_session()


# ---------------------------------------------------------------------------------------------
# Maps and how faithful they are
# ---------------------------------------------------------------------------------------------
def explain_all(explainer, images, target_class, batch_size=32):
    """Maps, probabilities and explained classes for every image, in batches."""
    parts = [
        explainer(images[i : i + batch_size], target_class)
        for i in range(0, len(images), batch_size)
    ]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def upsampled(maps, size):
    return np.stack([upsample(m, (size, size)) for m in maps])


def tolerance_pixels(explainer, size, cells):
    """`cells` cells of the explained layer's map, in input pixels."""
    cell = size / explainer.layer.output.shape[1]
    return int(round(cells * cell))


def faithfulness(maps, masks, tolerance):
    """Pointing-game hit rate and mean energy inside the masks, with what chance would give.

    Images with an empty mask have nothing to point at (a normal femur has no fracture) and are left
    out.
    """
    if masks is not None:
        has_region = masks.any(axis=(1, 2))
        maps, masks = maps[has_region], masks[has_region]
    if masks is None or len(maps) == 0:
        return {"hit_rate": None, "energy_inside": None, "chance_hit_rate": None, "n": 0}
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
    grown = [cv2.dilate(m.astype(np.uint8), kernel) > 0 if tolerance else m for m in masks]
    return {
        "hit_rate": float(np.mean([pointing_hit(c, m, tolerance) for c, m in zip(maps, masks)])),
        "energy_inside": float(np.mean([energy_inside(c, m) for c, m in zip(maps, masks)])),
        # A point dropped at random hits the (grown) region this often; the energy of a flat
        # map inside the region is the region's area share.
        "chance_hit_rate": float(np.mean([g.mean() for g in grown])),
        "chance_energy": float(np.mean([m.mean() for m in masks])),
        "n": int(len(maps)),
    }


def faithfulness_by_class(maps, masks, labels, correct, tolerance, class_names):
    """Faithfulness on correctly classified images: all together and per class."""
    pick = lambda keep: faithfulness(maps[keep], None if masks is None else masks[keep], tolerance)
    result = {"all": pick(correct)}
    for label, name in enumerate(class_names):
        result[name] = pick(correct & (labels == label))
    return result


def sanity_checks(model, explainer, images, params):
    """The cascading model-randomisation test and the class-0 vs class-1 map comparison."""
    sample = images[: params["sanity_images"]]
    cascade = randomisation_test(
        model, sample, params["layer"], params["target_class"], params["seed"]
    )
    class_corr, all_zero = class_map_correlation(explainer, sample)
    final = cascade[-1][1]
    return {
        "n_images": int(len(sample)),
        "randomisation_cascade": [
            {"randomised_down_to": name, "spearman": corr} for name, corr in cascade
        ],
        "randomisation_correlation": final,
        # The drop need not be monotonic: report the step whose maps stayed closest to the trained
        # ones.
        "randomisation_highest": max(cascade, key=lambda step: step[1])[1],
        "randomisation_highest_after": max(cascade, key=lambda step: step[1])[0],
        "randomisation_passed": bool(final < SANITY_CORRELATION_LIMIT),
        "class_map_correlation": class_corr,
        "class_maps_all_zero": all_zero,  # of 2 x n_images maps: no evidence at all for that class
        "class_maps_differ": bool(class_corr < SANITY_CORRELATION_LIMIT),
    }


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def pick_grid_images(labels, predicted, count):
    """Indices covering both classes, correct and wrong predictions, taking turns between groups."""
    groups = [
        list(np.flatnonzero((labels == c) & ((predicted == labels) == ok)))
        for ok in (True, False)
        for c in (0, 1)
    ]
    chosen = []
    while len(chosen) < min(count, len(labels)) and any(groups):
        for group in groups:
            if group and len(chosen) < count:
                chosen.append(group.pop(0))
    return chosen


def plot_cam_grid(
    path, images, cams, labels, predicted, probabilities, explained, class_names, warning=""
):
    """Image and overlay side by side; title: true / predicted class and its probability."""
    per_row = 3
    rows = int(np.ceil(len(images) / per_row))
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(2.3 * 2 * per_row, 2.6 * rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(len(images)):
        left, right = (
            axes[i // per_row, 2 * (i % per_row)],
            axes[i // per_row, 2 * (i % per_row) + 1],
        )
        ok = labels[i] == predicted[i]
        left.imshow(as_rgb(images[i]))
        right.imshow(np.clip(overlay(images[i], cams[i]), 0, 1))
        left.set_title(f"true {class_names[labels[i]]}", fontsize=9)
        right.set_title(
            f"pred {class_names[predicted[i]]} p={probabilities[i, predicted[i]]:.2f}"
            + ("" if explained[i] == predicted[i] else f"\nmap: {class_names[explained[i]]}"),
            fontsize=9,
            color="green" if ok else "red",
        )
    title = "Grad-CAM on validation images (green: correct, red: wrong)"
    fig.suptitle(not_learnt_title(title, warning), fontsize=11, color="red" if warning else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def not_learnt_title(title, warning):
    """The figure title, with the not-learnt sentence on its own line: such maps explain nothing."""
    return f"{title}\n{warning}" if warning else title


def plot_class_means(path, images, cams, labels, correct, class_names, warning=""):
    """Mean map of the correctly classified images of each class, over their mean image."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for label, ax in enumerate(axes):
        keep = correct & (labels == label)
        ax.axis("off")
        if not keep.any():
            ax.set_title(f"{class_names[label]}: no correct predictions")
            continue
        mean_cam = cams[keep].mean(axis=0)
        mean_cam = mean_cam / mean_cam.max() if mean_cam.max() > 0 else mean_cam
        ax.imshow(np.clip(overlay(images[keep].mean(axis=0), mean_cam), 0, 1))
        ax.set_title(f"{class_names[label]}: mean of {int(keep.sum())} maps", fontsize=10)
    if warning:
        fig.suptitle(not_learnt_title("Mean Grad-CAM per class", warning), fontsize=10, color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_randomisation(path, sanity):
    """Rank correlation with the trained maps along the cascade of `sanity_checks`."""
    steps = sanity["randomisation_cascade"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(range(len(steps) + 1), [1.0] + [s["spearman"] for s in steps], marker="o")
    ax.set_xticks(
        range(len(steps) + 1),
        ["trained"] + [s["randomised_down_to"] for s in steps],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylim(-0.5, 1.05)
    ax.set_ylabel("Spearman vs trained maps")
    ax.set_title("Cascading randomisation (weights re-initialised from the top)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
