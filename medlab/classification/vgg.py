"""The lab's from-scratch VGG16-style classifier ("Lab 2 task 7a"), shared by Tasks 1-3."""

import keras
from keras import layers

LAST_CONV_LAYER = "Last_ConvLayer"
# Filters of each block as multiples of `base`, with the number of convolutions in the block.
VGG16_BLOCKS = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))
POOLING = {"max": layers.GlobalMaxPooling2D, "avg": layers.GlobalAveragePooling2D}
# (x - 0.5) / 0.25: [0, 1] pixels to [-2, 2]. Without batch norm the 13 plain convolutions shrink
# the variations of [0, 1] inputs until the output is constant and training stalls at loss 0.693.
CENTRING = (4.0, -2.0)
# Minkowski norm of the shades-of-grey illuminant estimate (Finlayson and Trezzi 2004); 6 is the
# value used for dermoscopy colour constancy (Barata et al. 2015).
SHADES_OF_GREY_NORM = 6.0


@keras.saving.register_keras_serializable(package="medlab")
class ShadesOfGrey(layers.Layer):
    """Colour constancy for photos: each image's channels are rescaled so that its illuminant
    estimate, the `norm`-mean of each channel, becomes grey at the image's own brightness.

    Inputs and outputs are [0, 1] pixels (clipped). Being part of the model, it is applied the
    same way in training, evaluation, `explain` and `predict`. On one channel it is the identity.
    """

    def __init__(self, norm=SHADES_OF_GREY_NORM, **kwargs):
        # float32 even under mixed precision: the 6th powers of dark pixels underflow in float16.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.norm = float(norm)

    def call(self, images):
        powered = keras.ops.power(keras.ops.maximum(images, 1e-6), self.norm)
        illuminant = keras.ops.mean(powered, axis=(1, 2), keepdims=True) ** (1.0 / self.norm)
        illuminant = keras.ops.maximum(illuminant, 1e-6)  # a black channel stays black
        grey = keras.ops.mean(illuminant, axis=-1, keepdims=True)
        return keras.ops.clip(images * grey / illuminant, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}


def build_vgg16_style(
    input_shape=(128, 128, 1),
    base=8,
    n_classes=2,
    dense_units=64,
    dense_layers=3,
    dropout=0.4,
    batch_norm=False,
    pooling=None,
    centre=False,
    colour_constancy=False,
    name="vgg16_style",
):
    """VGG16 blocks [b,b] [2b,2b] [4b x3] [8b x3] [8b x3] of 3x3 'same' convs + ReLU + max-pooling,
    then Flatten and `dense_layers` x (Dense(dense_units, relu), Dropout(dropout)).

    The lab's network is the default. Two options help it learn small, movable evidence (a
    fracture line) from few images: `batch_norm` puts a BatchNormalization after every
    convolution's ReLU (so each convolution, `Last_ConvLayer` included, still outputs rectified
    maps for Grad-CAM), and `pooling` ("max" or "avg"; None or "flatten": the lab's Flatten)
    replaces Flatten by global pooling, as `keras.applications` models do. Dropout 0 leaves the
    Dropout layers out. `centre` puts a Rescaling layer named `centre_pixels` first, mapping
    [0, 1] pixels to [-2, 2] (`CENTRING`); `colour_constancy` puts `ShadesOfGrey` before it.

    The output is a softmax over `n_classes`, or a single sigmoid unit when `n_classes` is 1.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if colour_constancy:
        x = ShadesOfGrey(name="colour_constancy")(x)
    if centre:
        x = layers.Rescaling(CENTRING[0], offset=CENTRING[1], name="centre_pixels")(x)
    for block, (multiple, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            is_last = block == len(VGG16_BLOCKS) and conv == convs
            conv_name = LAST_CONV_LAYER if is_last else f"block{block}_conv{conv}"
            x = layers.Conv2D(
                base * multiple, 3, padding="same", activation="relu", name=conv_name
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if pooling in (None, "flatten"):
        x = layers.Flatten(name="flatten")(x)
    else:
        x = POOLING[pooling](name=f"global_{pooling}_pool")(x)
    for i in range(1, dense_layers + 1):
        x = layers.Dense(dense_units, activation="relu", name=f"dense{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    activation = "sigmoid" if n_classes == 1 else "softmax"
    # float32 even under a mixed-precision policy, so probabilities and losses keep full precision.
    outputs = layers.Dense(n_classes, activation=activation, dtype="float32", name="prediction")(x)
    return keras.Model(inputs, outputs, name=name)


# Bytes per value while training in float32 (as the U-Net's estimate): each layer output is kept
# for the backward pass (4); each weight has a gradient and Adam's two moments (4 x 4 bytes).
BYTES_PER_ACTIVATION, BYTES_PER_WEIGHT = 4, 16
# Training holds each layer output and, as the backward pass reaches it, its gradient: measured
# peaks grow about twice as fast as the outputs alone (bench/memory_estimate.py).
HELD_PER_OUTPUT = 2


def training_gb(size, channels, base, batch_size, batch_norm=False, pooling=None, images=0):
    """GiB that training `build_vgg16_style` at `size` takes: the layer outputs of a batch and
    their gradients, the weights with their gradients and Adam's state, and `images` decoded
    images held in memory."""
    values, weights = layer_outputs_and_weights(size, channels, base, batch_norm, pooling)
    return (
        values * batch_size * BYTES_PER_ACTIVATION * HELD_PER_OUTPUT
        + weights * BYTES_PER_WEIGHT
        + images * size * size * channels * 4
    ) / 2**30


def layer_outputs_and_weights(size, channels, base, batch_norm=False, pooling=None):
    """Layer-output values for one image and kernel weights of `build_vgg16_style` (with colour
    constancy and centring; the dense layers' outputs and the biases are a rounding error)."""
    values = size * size * channels * 3  # the input, colour constancy and centring
    weights, c_in, side = 0, channels, size
    for multiple, convs in VGG16_BLOCKS:
        filters = base * multiple
        values += convs * side * side * filters * (1 + bool(batch_norm))
        weights += 9 * filters * (c_in + (convs - 1) * filters)
        side, c_in = side // 2, filters
        values += side * side * filters  # the pooling
    top = side * side * c_in if pooling in (None, "flatten") else c_in
    return values + top, weights + top * 64 + 2 * 64 * 64 + 64 * 2
