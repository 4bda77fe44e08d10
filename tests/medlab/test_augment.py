"""medlab.augment.random_colour: per-image brightness, contrast and tint, pixels kept in [0, 1]."""

import numpy as np
import tensorflow as tf

from medlab.augment import random_colour

SEED = tf.constant([3, 4], tf.int64)


def test_strength_zero_leaves_the_images_as_they_are():
    images = tf.random.uniform((4, 8, 8, 3), seed=1)
    assert random_colour(images, SEED, 0.0) is images


def test_a_grey_image_gets_a_warm_or_cool_tint_red_times_blue_equals_green_squared():
    grey = tf.fill((6, 8, 8, 3), 0.5)  # flat: contrast cannot change it, only gain and tint
    out = random_colour(grey, SEED, 0.3).numpy()
    red, green, blue = out[:, 0, 0, 0], out[:, 0, 0, 1], out[:, 0, 0, 2]
    np.testing.assert_allclose(red * blue, green**2, rtol=1e-5)  # R = g t, G = g, B = g / t
    assert np.all(np.abs(red / green - 1) <= 0.15 + 1e-6) and np.ptp(red / green) > 0.01
    assert np.all(np.abs(green / 0.5 - 1) <= 0.3 + 1e-6)  # brightness within the strength
    assert np.all(out == out[:, :1, :1])  # one factor per image, the same at every pixel


def test_each_image_draws_its_own_factors_repeatably_and_stays_in_range():
    images = tf.random.uniform((8, 8, 8, 3), seed=2)
    first, again = random_colour(images, SEED, 0.9), random_colour(images, SEED, 0.9)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert 0.0 <= float(tf.reduce_min(first)) and float(tf.reduce_max(first)) <= 1.0
    ratios = (first / (images + 1e-3)).numpy().reshape(8, -1).mean(axis=1)
    assert np.ptp(ratios) > 0.05
    other = random_colour(images, tf.constant([5, 6], tf.int64), 0.9)
    assert not np.allclose(first.numpy(), other.numpy())


def test_grayscale_images_get_brightness_and_contrast_only():
    images = tf.random.uniform((4, 8, 8, 1), 0.3, 0.7, seed=3)
    out = random_colour(images, SEED, 0.2).numpy()  # small enough that nothing is clipped
    for before, after in zip(images.numpy(), out):
        slope, offset = np.polyfit(before.ravel(), after.ravel(), 1)
        np.testing.assert_allclose(after, slope * before + offset, atol=1e-5)  # an affine map
        assert 0.8**2 - 1e-6 <= slope <= 1.2**2 + 1e-6


def test_float64_colour_images_keep_their_type():
    images = tf.random.uniform((2, 4, 4, 3), dtype=tf.float64, seed=4)
    assert random_colour(images, SEED, 0.3).dtype == tf.float64
