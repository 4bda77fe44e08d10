"""The overlay figure stays legible with real, long file names."""

import matplotlib.pyplot as plt
import numpy as np

import unet
from medlab.plots import fit_label

LONG_NAMES = [f"SARS-10.1148rg.242035193-g04mr34g05x-Fig{i}-day9.png" for i in range(8)]


def test_overlay_titles_do_not_run_into_each_other_with_long_file_names():
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 1)).astype(np.float32)
    masks = np.zeros_like(images)
    masks[:, 8:24, 8:24] = 1
    fig = unet.overlay_figure(images, masks, masks, np.ones(8), LONG_NAMES)
    fig.canvas.draw()  # places the panels as they are saved (equal aspect shrinks them)
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    boxes = [title.get_window_extent(renderer) for title in titles]
    assert len(boxes) == 8
    panels = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), titles[i].get_text()
        assert not any(box.overlaps(panel) for j, panel in enumerate(panels) if j != i), titles[
            i
        ].get_text()
    figure_box = fig.bbox
    assert all(figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 for box in boxes)
    assert "day9.png" in titles[0].get_text() and "SARS-10" in titles[0].get_text()
    plt.close(fig)


def test_fit_label_keeps_both_ends_and_the_width():
    name = LONG_NAMES[0]
    short = fit_label(name, 20)
    assert len(short) == 20 and short.startswith("SARS-10") and short.endswith("day9.png")
    assert fit_label("CHNCXR_0001_0.png", 20) == "CHNCXR_0001_0.png"
