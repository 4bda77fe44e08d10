"""Every figure type, rendered at its saved size: no text runs past the figure's edge, epochs are
whole numbers, the mean of a spread plot is not hidden by its dots, and confusion-matrix counts
are readable on their cells."""

import matplotlib.figure
import matplotlib.text
import numpy as np
import pytest

import unet
from medlab import plots
from medlab.app.comparisons import comparison_figure
from medlab.classification import cam, transfer

WARNING = (
    "The model predicts Nevi for 371 of 371 validation images: it has not learnt the task. "
    "Run it longer (--epochs 80) or try --preset recommended."
)


@pytest.fixture
def saved(monkeypatch):
    """The figures saved while the test runs, drawn as `savefig` draws them."""
    figures = []
    original = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        fig.clipped = clipped_texts(fig)  # now: a closed figure has no renderer
        figures.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def texts(fig):
    """The texts drawn: tick labels only of visible axes and of the ticks inside their limits
    (matplotlib keeps spare Tick objects outside them, which it does not draw)."""
    ticks, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {tick.label1, tick.label2}
            for tick in axis._update_ticks() if ax.axison and axis.get_visible() else []:
                drawn |= {tick.label1, tick.label2}
    return [
        t
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text() and (t not in ticks or t in drawn)
    ]


def clipped_texts(fig):
    """The texts whose box extends past the figure (by more than a pixel)."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    return [
        t.get_text()
        for t in texts(fig)
        for extent in [t.get_window_extent(renderer)]
        if extent.x0 < box.x0 - 1
        or extent.y0 < box.y0 - 1
        or extent.x1 > box.x1 + 1
        or extent.y1 > box.y1 + 1
    ]


def history(epochs):
    values = list(np.linspace(1, 0.2, epochs))
    return {"loss": values, "val_loss": values, "dice_coefficient": values[::-1]}


def test_every_figure_type_keeps_its_text_inside(saved, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32, 1)).astype(np.float32)
    cams = rng.random((6, 32, 32)).astype(np.float32)
    labels, predicted = np.array([0, 1, 0, 1, 0, 1]), np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.tile([[0.7, 0.3]], (6, 1))
    masks = (images > 0.5).astype(np.float32)
    truth, scores = [0, 1] * 10, {"transfer": rng.random(20), "scratch": rng.random(20)}
    metrics = {m: {"val_auc": 0.5, "val_auc_ci": [0.3, 0.7]} for m in scores}

    plots.plot_curves({"4a": history(4), "4b-with-a-long-name": history(4)}, tmp_path / "c.png")
    comparison_figure(
        {"4a": history(3), "4b": history(3)},
        tmp_path / "compare.png",
        "4a",
        "4b",
        "BCE vs Dice loss: does the loss change the validation Dice of the plain U-Net?",
        {"loss": "loss", "dice_coefficient": "soft Dice"},
    )
    plots.plot_spread({"4a": rng.random(20), "4e-dice": rng.random(20)}, tmp_path / "d.png", "Dice")
    cam.plot_cam_grid(
        tmp_path / "grid.png", images, cams, labels, predicted, probabilities, predicted,
        ["Mel", "Nevi"], WARNING,
    )  # fmt: skip
    correct = labels == predicted
    cam.plot_class_means(
        tmp_path / "m.png", images, cams, labels, correct, ["Mel", "Nevi"], WARNING
    )
    cascade = [
        {"spearman": 0.5 - i / 10, "randomised_down_to": f"block{i}_conv3"} for i in range(5)
    ]
    cam.plot_randomisation(tmp_path / "r.png", {"randomisation_cascade": cascade})
    transfer.plot_roc(truth, scores, metrics, tmp_path / "roc.png", "Mel")
    transfer.plot_confusion(truth, scores, ["Mel", "Nevi"], 0, tmp_path / "conf.png", 0.5)
    names = [f"CHNCXR_{i:04d}_0_a_very_long_file_name_from_a_hospital.png" for i in range(6)]
    unet.plot_overlays(images, masks, masks, np.ones(6), tmp_path / "o.png", names)
    plots.save_titled_image(
        tmp_path / "explain.png", np.repeat(images[0], 3, -1), f"{names[0]}: predicted Mel (p=0.93)"
    )

    assert len(saved) == 10
    for fig in saved:
        assert not fig.clipped, [t.get_text() for t in texts(fig)][:3]


def test_the_not_learnt_sentence_is_shown_whole(saved, tmp_path):
    images = np.zeros((2, 16, 16, 1), np.float32)
    cams = np.ones((2, 16, 16), np.float32)
    labels, correct = np.array([0, 1]), np.array([True, True])
    cam.plot_class_means(tmp_path / "m.png", images, cams, labels, correct, ["A", "B"], WARNING)
    [title] = [t for t in texts(saved[0]) if "learnt" in t.get_text()]
    assert " ".join(title.get_text().split()) == f"Mean Grad-CAM per class {WARNING}"


def test_epoch_ticks_are_whole_numbers(saved, tmp_path):
    plots.plot_curves({"run": history(2)}, tmp_path / "c.png")
    ticks = saved[0].axes[0].get_xticks()
    visible = ticks[(ticks >= 1) & (ticks <= 2)]
    assert list(visible) == [1, 2]


def test_spread_mean_label_is_drawn_over_the_dots(saved, tmp_path):
    plots.plot_spread({"4a": [0.9, 0.91, 0.92]}, tmp_path / "d.png", "Dice")
    ax = saved[0].axes[0]
    [label] = [t for t in ax.texts if t.get_text() == "0.910"]
    dots = max(c.get_zorder() for c in ax.collections)
    assert label.get_zorder() > dots and label.get_bbox_patch() is not None


def test_confusion_counts_contrast_with_their_cells(saved, tmp_path):
    # A matrix whose smallest count is large: the old rule drew white text on the lightest cell.
    truth = [0] * 60 + [1] * 70
    scores = {"model": [0.0] * 30 + [1.0] * 30 + [0.0] * 32 + [1.0] * 38}
    transfer.plot_confusion(truth, scores, ["Mel", "Nevi"], 0, tmp_path / "conf.png", 0.5)
    ax = saved[0].axes[0]
    image = ax.images[0]
    for text in ax.texts:
        column, row = (round(v) for v in text.get_position())
        cell = image.cmap(image.norm(image.get_array()[row, column]))
        colour = matplotlib.colors.to_rgb(text.get_color())
        assert transfer.contrast_ratio(colour, cell) >= 4.5, text.get_text()


def test_contrast_ratio_follows_wcag():
    assert transfer.contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21)
    assert transfer.contrast_ratio((1, 1, 1), (1, 1, 1)) == pytest.approx(1)
