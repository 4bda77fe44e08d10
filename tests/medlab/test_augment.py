"""medlab.augment.random_colour (per-image brightness, contrast and tint) and random_intensity
(gamma, contrast, brightness, blur and noise of an X-ray, never of its mask): pixels kept in
[0, 1]."""

import numpy as np
import tensorflow as tf

from medlab.augment import gaussian_blur, random_colour, random_intensity
from unet import augment_pair

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


def test_intensity_changes_each_image_differently_repeatably_and_stays_in_range():
    images = tf.random.uniform((8, 32, 32, 1), 0.1, 0.9, seed=5)
    first, again = random_intensity(images, SEED), random_intensity(images, SEED)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert 0.0 <= float(tf.reduce_min(first)) and float(tf.reduce_max(first)) <= 1.0
    change = np.abs(first.numpy() - images.numpy()).mean(axis=(1, 2, 3))
    assert change.min() > 0.005 and np.ptp(change) > 0.005  # every image, each its own draw
    other = random_intensity(images, tf.constant([5, 6], tf.int64))
    assert not np.allclose(first.numpy(), other.numpy())


def test_intensity_with_only_gamma_keeps_the_order_of_grey_levels():
    ramp = tf.reshape(tf.linspace(0.0, 1.0, 64), (1, 8, 8, 1))
    gamma_only = {"gamma": 0.5, "contrast": 0.0, "brightness": 0.0, "blur": 0.0, "noise": 0.0}
    out = random_intensity(tf.tile(ramp, (6, 1, 1, 1)), SEED, gamma_only).numpy()
    flat = out.reshape(6, -1)
    assert np.all(np.diff(flat, axis=1) >= 0)  # monotonic: a gamma curve
    assert np.allclose(flat[:, [0, -1]], [0.0, 1.0])  # black stays black, white white
    exponents = np.log(flat[:, 32]) / np.log(ramp.numpy().ravel()[32])
    assert np.all((exponents >= 1 / 1.5 - 1e-4) & (exponents <= 1.5 + 1e-4))
    assert np.ptp(exponents) > 0.05


def test_blur_keeps_a_flat_image_and_the_mean_and_smooths_an_edge():
    flat = tf.fill((1, 8, 8, 1), 0.25)
    np.testing.assert_allclose(gaussian_blur(flat).numpy(), 0.25, rtol=1e-6)
    edge = tf.concat([tf.zeros((1, 16, 8, 1)), tf.ones((1, 16, 8, 1))], axis=2)
    blurred = gaussian_blur(edge).numpy()[0, 8, :, 0]
    assert 0.0 < blurred[7] < 0.5 < blurred[8] < 1.0  # the step is now a ramp
    np.testing.assert_allclose(blurred[[0, -1]], [0.0, 1.0], atol=1e-6)  # far from the edge


def test_intensity_augmentation_leaves_the_mask_and_the_shared_geometry_alone():
    image = tf.random.uniform((4, 32, 32, 1), seed=6)
    mask = tf.cast(tf.random.uniform((4, 32, 32, 1), seed=7) > 0.5, tf.float32)
    geometry_only = augment_pair(image, mask, SEED)
    both = augment_pair(image, mask, SEED, intensity=True)
    np.testing.assert_array_equal(both[1].numpy(), geometry_only[1].numpy())
    assert not np.allclose(both[0].numpy(), geometry_only[0].numpy())
    look_only = augment_pair(image, mask, SEED, geometry=False, intensity=True)
    np.testing.assert_array_equal(look_only[1].numpy(), mask.numpy())
    # no geometric change: the image keeps its structure, pixel for pixel
    correlation = np.corrcoef(look_only[0].numpy().ravel(), image.numpy().ravel())[0, 1]
    assert correlation > 0.8
