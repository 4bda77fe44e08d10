"""Random augmentation for `tf.data`: geometry shared by every channel, and the look of a film.

The segmentation pipeline (`unet.augment_pair`) stacks image and mask along the channel axis
before calling `random_affine`, so both receive exactly the same rotation, shift, zoom and flip;
the mask is then re-thresholded to stay binary. A single projective resampling replaces the four
separate interpolations that a chain of Keras Random* layers would apply, which keeps images
sharper.
`random_intensity` then changes the image alone (never the mask), as X-ray films of other
hospitals differ: exposure, contrast, gamma, sharpness and noise.
"""

import math

import tensorflow as tf

# Red times t, green unchanged, blue divided by t: a warmer or cooler light.
TINT_EXPONENTS = (1.0, 0.0, -1.0)
# The ranges of `random_intensity`.
INTENSITY = {"gamma": 0.5, "contrast": 0.25, "brightness": 0.25, "blur": 0.5, "noise": 0.03}
BLUR_SIGMA = 1.0  # pixels


def affine_matrix(height, width, angle, shift_y, shift_x, zoom, flip):
    """The 8 projective-transform parameters that map output pixels to input pixels.

    `angle` in radians, shifts as fractions of the size, `zoom` > 1 zooms out, `flip` 0/1.
    """
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    sign = 1.0 - 2.0 * flip  # -1 mirrors the x axis about the centre
    a0, a1 = cos * sign, -sin
    b0, b1 = sin * sign, cos
    tx = cx - a0 * cx - a1 * cy - shift_x * width
    ty = cy - b0 * cx - b1 * cy - shift_y * height
    return tf.stack([a0, a1, tx, b0, b1, ty, 0.0, 0.0])


def random_affine(images, seed, rotation=10.0, shift=0.1, zoom=0.2, flip=True, fill_mode="NEAREST"):
    """Apply a random transform to each image of a batch (B, H, W, C), or to one image (H, W, C).

    `seed` is a stateless seed of shape [2], so the same seed gives the same transforms. rotation in
    degrees (uniform in +-rotation), shift as a fraction of height/width, zoom as in Keras'
    `zoom_range` (scale uniform in [1-zoom, 1+zoom]), horizontal flip with probability 0.5.
    Transforming a whole batch in one op keeps augmentation cheap next to a training step.
    """
    single = images.shape.rank == 3
    batch = images[None] if single else images
    count = tf.shape(batch)[0]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    uniform = lambda i, low, high: tf.random.stateless_uniform([count], seeds[i], low, high)
    angle = uniform(0, -rotation, rotation) * (math.pi / 180.0)
    shift_y, shift_x = uniform(1, -shift, shift), uniform(2, -shift, shift)
    scale = uniform(3, 1.0 - zoom, 1.0 + zoom)
    flipped = tf.cast(uniform(4, 0.0, 1.0) < 0.5, tf.float32) * (1.0 if flip else 0.0)
    shape = tf.shape(batch)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    matrices = tf.vectorized_map(
        lambda p: affine_matrix(height, width, p[0], p[1], p[2], p[3], p[4]),
        tf.stack([angle, shift_y, shift_x, scale, flipped], axis=1),
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=batch,
        transforms=matrices,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return out[0] if single else out


def random_colour(images, seed, strength):
    """Random brightness, contrast and (RGB only) warm/cool tint, one draw per image of a batch
    (B, H, W, C); pixels stay in [0, 1]. `strength` 0 leaves the images as they are.

    Each image's contrast is scaled about its mean by a factor in [1 - s, 1 + s], then its
    brightness by a factor in [1 - s, 1 + s]; an RGB image's red is multiplied and its blue
    divided by a factor in [1 - s/2, 1 + s/2]. Photos taken under other lights and cameras look
    like this; the colours within an image keep their order, except where pixels clip at 0 or 1.
    """
    if not strength:
        return images
    count, channels = tf.shape(images)[0], images.shape[-1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    uniform = lambda i, low, high: tf.random.stateless_uniform(
        [count, 1, 1, 1], seeds[i], low, high, dtype=images.dtype
    )
    gain = uniform(0, 1.0 - strength, 1.0 + strength)
    if channels == 3:
        tint = uniform(1, 1.0 - strength / 2, 1.0 + strength / 2)
        gain = gain * tint ** tf.constant(TINT_EXPONENTS, images.dtype)
    mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
    contrasted = (images - mean) * uniform(2, 1.0 - strength, 1.0 + strength) + mean
    return tf.clip_by_value(contrasted * gain, 0.0, 1.0)


def random_intensity(images, seed, strength=INTENSITY):
    """Random gamma, contrast, brightness, blur or sharpening and noise, one draw per image of a
    batch (B, H, W, C) or of one image (H, W, C) in [0, 1]; pixels stay in [0, 1].

    The ranges of `strength` (INTENSITY by default, nnU-Net's for gamma and contrast): gamma
    log-uniform in [1/(1+g), 1+g]; contrast about the image mean and brightness as factors in
    [1 - c, 1 + c] and [1 - b, 1 + b]; a blend weight in [-s, s] with a Gaussian-blurred copy
    (negative weights sharpen); Gaussian noise of a standard deviation in [0, n].
    """
    single = images.shape.rank == 3
    batch = images[None] if single else images
    count = tf.shape(batch)[0]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    uniform = lambda i, low, high: tf.random.stateless_uniform(
        [count, 1, 1, 1], seeds[i], low, high, dtype=batch.dtype
    )
    log_gamma = math.log(1.0 + strength["gamma"])
    out = tf.pow(batch, tf.exp(uniform(0, -log_gamma, log_gamma)))
    mean = tf.reduce_mean(out, axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * uniform(1, 1.0 - strength["contrast"], 1.0 + strength["contrast"]) + mean
    out = out * uniform(2, 1.0 - strength["brightness"], 1.0 + strength["brightness"])
    blend = uniform(3, -strength["blur"], strength["blur"])
    out = out + blend * (gaussian_blur(out) - out)
    sigma = uniform(4, 0.0, strength["noise"])
    out = out + sigma * tf.random.stateless_normal(tf.shape(out), seeds[5], dtype=out.dtype)
    out = tf.clip_by_value(out, 0.0, 1.0)
    return out[0] if single else out


def gaussian_blur(images, sigma=BLUR_SIGMA):
    """Each channel of a batch (B, H, W, C) blurred by a 5x5 Gaussian, edges reflected."""
    taps = tf.exp(-0.5 * (tf.range(-2.0, 3.0, dtype=images.dtype) / sigma) ** 2)
    taps = taps / tf.reduce_sum(taps)
    channels = images.shape[-1]
    kernel = tf.tile((taps[:, None] * taps[None, :])[:, :, None, None], [1, 1, channels, 1])
    padded = tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def augmented_batches(pairs, batch_size, transform=None, seed=0):
    """Batch a `tf.data` dataset of (input, target) pairs, the last partial batch kept.

    With a `transform`, every batch becomes `transform(inputs, targets, batch_seed)`, where the
    stateless seed differs from batch to batch and epoch to epoch yet repeats with `seed`.
    """
    dataset = pairs.batch(batch_size)
    if transform is None:
        return dataset
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda pair, batch_seed: transform(pair[0], pair[1], batch_seed),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
