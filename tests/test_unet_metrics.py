"""Similarity metrics and losses against hand-computed values, including empty masks."""

import keras
import numpy as np
import pytest

import unet
from medlab.app.segmentation.commands import mask_warning
from medlab.app.segmentation.summary import collapse_message


def square(top, left, side, size=32):
    mask = np.zeros((size, size, 1), np.float32)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_scores_on_a_known_pair():
    truth = square(0, 0, 4)  # 16 pixels
    prediction = np.zeros_like(truth)
    prediction[0:2, 0:4] = 1  # 8 inside the truth
    prediction[10:12, 10:12] = 1  # 4 outside
    scores = unet.similarity_scores(truth[None], prediction[None])
    assert scores["dice"][0] == pytest.approx(2 * 8 / (16 + 12))
    assert scores["iou"][0] == pytest.approx(8 / 20)
    assert scores["precision"][0] == pytest.approx(8 / 12)
    assert scores["recall"][0] == pytest.approx(8 / 16)


def test_empty_mask_rules():
    empty, full = np.zeros((1, 8, 8, 1)), square(0, 0, 4, 8)[None]
    both_empty = unet.similarity_scores(empty, empty)
    assert all(both_empty[m][0] == 1.0 for m in ("dice", "iou", "precision", "recall"))
    missed = unet.similarity_scores(full, empty)  # nothing predicted
    assert all(missed[m][0] == 0.0 for m in ("dice", "iou", "precision", "recall"))
    invented = unet.similarity_scores(empty, full)  # lungs where there are none
    assert all(invented[m][0] == 0.0 for m in ("dice", "iou", "precision", "recall"))


def test_scores_are_per_image_then_averaged():
    truth = np.stack([square(0, 0, 4), square(0, 0, 16)])
    prediction = np.stack([square(0, 0, 4), np.zeros((32, 32, 1))])
    dice = unet.similarity_scores(truth, prediction)["dice"]
    # Pooling the pixels would give 2*16/(16+256+16) = 0.11; per image it is (1 + 0) / 2.
    np.testing.assert_allclose(dice, [1.0, 0.0])


def test_hd95_of_shifted_squares_is_the_shift():
    a, b = square(10, 10, 10)[..., 0], square(10, 13, 10)[..., 0]
    assert unet.hd95(a, b) == pytest.approx(3.0)
    assert unet.hd95(a, a) == 0.0


def test_hd95_empty_rules():
    empty, some = np.zeros((30, 40)), square(2, 2, 5, 30)[..., 0]
    some = np.pad(some, ((0, 0), (0, 10)))
    assert unet.hd95(empty, empty) == 0.0
    assert unet.hd95(some, empty) == pytest.approx(50.0)  # the diagonal of 30 x 40
    assert unet.hd95(empty, some) == pytest.approx(50.0)


def test_soft_dice_and_dice_loss():
    truth = np.stack([square(0, 0, 8), np.zeros((32, 32, 1), np.float32)])
    assert float(unet.dice_coefficient(truth, truth)) == pytest.approx(1.0, abs=1e-6)
    assert float(unet.dice_loss(truth, truth)) == pytest.approx(0.0, abs=1e-6)
    half = truth * 0.5
    # Image 1: (2*32 + 1) / (64 + 32 + 1); image 2 (empty truth, empty prediction): 1.
    expected = ((2 * 32 + 1) / (64 + 32 + 1) + 1.0) / 2
    assert float(unet.dice_coefficient(truth, half)) == pytest.approx(expected, rel=1e-5)
    inverted = 1.0 - truth[:1]
    assert float(unet.dice_coefficient(truth[:1], inverted)) < 0.01


def test_collapse_is_judged_on_every_validation_image():
    truth = np.stack([square(0, 0, 8)] * 10)
    nothing = np.zeros_like(truth)
    assert unet.collapsed(unet.similarity_scores(truth, nothing)) == "empty mask"
    one_found = nothing.copy()
    one_found[9] = square(0, 0, 2)  # the last image, beyond the first 8 kept for the figures
    assert unet.collapsed(unet.similarity_scores(truth, one_found)) is None


def test_collapse_tells_the_empty_mask_from_the_whole_image():
    truth = np.stack([square(0, 0, 8)] * 4)
    everything = np.ones_like(truth)
    assert unet.collapsed(unet.similarity_scores(truth, everything)) == "whole image"
    one_learnt = everything.copy()
    one_learnt[3] = square(0, 0, 9)
    assert unet.collapsed(unet.similarity_scores(truth, one_learnt)) is None
    p = {"loss": "bce", "epochs": 150, "lr": 1e-4}
    empty, full = (collapse_message("4b", kind, 14, p) for kind in ("empty mask", "whole image"))
    assert "no lung in any of its 14" in empty and "empty mask" in empty
    assert "whole image as lung in all 14" in full and "white on black" in full
    assert "--epochs" not in full and "only" not in empty
    assert "`python main_segmentation.py --experiments 4b --lr 3.3e-05`" in full
    # After a handful of epochs, too short a training is the cause named, whatever the loss.
    for kind in ("empty mask", "whole image"):
        short = collapse_message("4b", kind, 14, {**p, "loss": "dice", "epochs": 2})
        assert "after only 2 epoch(s)" in short and "--experiments 4b --epochs 20`" in short
        assert "Dice loss" not in short


def test_bce_dice_loss_is_the_sum_of_its_parts():
    truth = np.stack([square(0, 0, 8), square(4, 4, 12)])
    prediction = np.clip(truth * 0.7 + 0.2, 0, 1)
    bce = float(keras.losses.BinaryCrossentropy()(truth, prediction))
    assert float(unet.LOSSES["bce_dice"](truth, prediction)) == pytest.approx(
        bce + float(unet.dice_loss(truth, prediction)), rel=1e-5
    )


def test_cosine_schedule_falls_from_the_rate_to_zero_over_the_run():
    schedule = unet.learning_rate(1e-3, "cosine", total_steps=40)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(20)) == pytest.approx(5e-4, rel=1e-3)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-12)
    assert unet.learning_rate(1e-3, "constant", total_steps=40) == 1e-3
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        unet.learning_rate(1e-3, "step", total_steps=40)


def test_postprocessing_keeps_the_two_largest_regions_and_fills_their_holes():
    left, right, speck = square(4, 2, 10), square(4, 18, 8), square(28, 28, 2)
    truth = left + right
    mask = truth + speck
    mask[8, 6] = 0  # a hole inside the left lung
    cleaned = unet.keep_lungs(mask[None])
    np.testing.assert_array_equal(cleaned[0], truth)
    lonely = unet.keep_lungs(speck[None])  # fewer regions than two: kept as they are
    np.testing.assert_array_equal(lonely[0], speck)


def test_predict_calls_an_empty_or_full_mask_what_it_is():
    lungs = square(4, 4, 12)  # a quarter of the image
    assert mask_warning(lungs, unet.FULL_SHARE) == ""
    assert "**(empty: no lung found" in mask_warning(np.zeros_like(lungs), unet.FULL_SHARE)
    assert "this is no lung mask)**" in mask_warning(np.ones_like(lungs), unet.FULL_SHARE)
