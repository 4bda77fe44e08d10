"""Figures and Markdown shared by every task: learning curves, comparison bars, tables."""

import csv
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only: the scripts run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medlab.atomic import replacing  # noqa: E402

GLYPH_EM = 0.6  # DejaVu Sans' average character width, in units of the font size


def fit_label(text, width):
    """`text` cut to `width` characters by an ellipsis in the middle: file names differ at their
    start (source, patient) and their end (view, day, extension), so both ends are kept."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return f"{text[: width - 1 - tail]}\u2026{text[-tail:]}"


def wrapped(text, width_inches, fontsize):
    """`text` broken at spaces into lines that fit `width_inches` at `fontsize` points, so that
    a long title or warning is never cut off at the figure's edge."""
    chars = max(12, int(width_inches * 72 / (GLYPH_EM * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def integer_epochs(ax):
    """Epochs are whole numbers: no 1.25, 1.50 ticks on a short run."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_titled_image(path, image, title, min_width=360, dpi=100):
    """An RGB image with a title above it, at its own size (one image pixel per output pixel)
    unless it is narrower than `min_width` pixels, when it is enlarged so that the title fits."""
    height, width = image.shape[:2]
    scale = max(1.0, min_width / width)
    image_w, image_h = width * scale / dpi, height * scale / dpi
    band = 0.5  # inches: two lines of the title
    fig = plt.figure(figsize=(image_w, image_h + band), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, image_h / (image_h + band)])
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    ax.axis("off")
    fig.text(
        0.5,
        1 - band / 2 / (image_h + band),
        wrapped(title, 0.95 * image_w, 9),
        ha="center",
        va="center",
        fontsize=9,
    )
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def read_history(path):
    """A Keras `CSVLogger` file as {column: [values per epoch]}."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_curves(histories, path, metrics=("loss",), titles=None):
    """Training (solid) and validation (dashed) curves, one panel per metric, one colour per run.

    `histories` maps a run's label to a history dict such as `read_history` returns.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (label, history) in enumerate(histories.items()):
            colour = f"C{i}"
            epochs = np.arange(1, len(history.get(metric, [])) + 1)
            if metric in history:
                ax.plot(epochs, history[metric], color=colour, label=f"{label} train")
            if f"val_{metric}" in history:
                ax.plot(
                    epochs,
                    history[f"val_{metric}"],
                    color=colour,
                    linestyle="--",
                    label=f"{label} validation",
                )
        ax.set_title(wrapped((titles or {}).get(metric, metric), 4.8, 12))
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spread(values, path, ylabel, title=""):
    """One bar per run at the mean of its values, with every value drawn as a dot.

    `values` maps a run's label to per-item scores (per image, per fold, per seed).
    """
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 4))
    rng = np.random.default_rng(0)  # fixed jitter, so the figure is reproducible
    for i, label in enumerate(labels):
        scores = np.asarray(values[label], dtype=float)
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            continue
        ax.bar(i, scores.mean(), color=f"C{i}", alpha=0.45)
        ax.scatter(i + rng.uniform(-0.25, 0.25, scores.size), scores, s=8, color=f"C{i}", zorder=3)
        # Above the dots, on a white box, so that no dot hides the mean.
        ax.text(
            i,
            scores.mean(),
            f"{scores.mean():.3f}",
            ha="center",
            va="bottom",
            fontsize=8,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.85, "lw": 0},
        )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(wrapped(title, fig.get_figwidth() * 0.8, 12))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path, rows, columns):
    with replacing(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
