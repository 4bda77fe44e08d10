"""Grad-CAM (Selvaraju et al., 2017) for any Keras image classifier, with its sanity checks.

A class activation map weights the feature maps of a convolutional layer by the mean gradient of the
class score with respect to each map, sums them, keeps the positive part and normalises to [0, 1].

The class score is the pre-activation output (the logit): the gradient of a saturated softmax or
sigmoid probability vanishes for confident predictions and would leave an all-zero map. A single
sigmoid unit scores class 1 with its logit and class 0 with the negative logit, so class 0 is not
explained by the argmax of a one-element vector (always 0).

The checks follow Adebayo et al. (2018, "Sanity checks for saliency maps"): maps of a trained model
must change when its weights are re-initialised, and maps of the two classes must differ. Pointing
game and energy inside a known region measure whether a map points at the right place.
"""

import cv2
import keras
import matplotlib
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

from medlab.errors import UserError

DEFAULT_LAYER = "Last_ConvLayer"
OVERLAY_ALPHA = 0.4
COLORMAP = "jet"
# Output activations whose pre-activation value is used as the class score.
SQUASHING = {"softmax", "sigmoid"}


# ---------------------------------------------------------------------------------------------
# Target layer and class score
# ---------------------------------------------------------------------------------------------
def model_node(model, layer):
    """The call of `layer` that belongs to `model`'s graph.

    A layer taken from another model (e.g. the layers of a builder's model re-applied after a new
    input layer) has one call per graph, and `layer.output` is the first one: not connected to
    this model's inputs.
    """
    in_model = {
        id(node) for nodes in getattr(model, "_nodes_by_depth", {}).values() for node in nodes
    }
    nodes = [node for node in getattr(layer, "_inbound_nodes", []) if id(node) in in_model]
    return nodes[0] if nodes else None


def layer_output(model, layer):
    node = model_node(model, layer)
    return node.output_tensors[0] if node is not None else layer.output


def layer_input(model, layer):
    node = model_node(model, layer)
    return node.input_tensors[0] if node is not None else layer.input


def is_spatial(model, layer):
    """True for a layer that outputs feature maps (batch, height, width, channels)."""
    try:
        output = layer_output(model, layer)
        return len(output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer)
    except (AttributeError, ValueError):
        return False


def conv_layer_names(model):
    return [
        layer.name
        for layer in model.layers
        if "Conv" in type(layer).__name__ and is_spatial(model, layer)
    ]


def nested_owner(model, name):
    """The name of a nested model inside `model` that holds a layer called `name`, or None."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if any(inner.name == name for inner in layer.layers) or nested_owner(layer, name):
                return layer.name
    return None


def find_target_layer(model, name=None):
    """The layer to explain: `name`, else `Last_ConvLayer`, else the last convolution."""
    candidates = conv_layer_names(model)
    listing = ", ".join(candidates[-6:]) or "none"
    if name is None:
        if any(layer.name == DEFAULT_LAYER for layer in model.layers):
            name = DEFAULT_LAYER
        elif candidates:
            name = candidates[-1]
        else:
            owner = next(
                (layer.name for layer in model.layers if isinstance(layer, keras.Model)), None
            )
            hint = (
                f"; its convolutions sit inside the nested model '{owner}': build the classifier "
                "as one flat graph, e.g. keras.Model(backbone.input, head(backbone.output))"
                if owner
                else ""
            )
            raise UserError(f"model '{model.name}' has no convolutional layer to explain{hint}")
    try:
        layer = model.get_layer(name)
    except ValueError:
        owner = nested_owner(model, name)
        if owner:
            raise UserError(
                f"layer '{name}' is inside the nested model '{owner}', which Grad-CAM "
                "cannot reach; build the classifier as one flat graph, e.g. "
                "keras.Model(backbone.input, head(backbone.output))"
            ) from None
        raise UserError(
            f"model '{model.name}' has no layer named '{name}'; convolutional layers "
            f"(last ones): {listing}"
        ) from None
    if not is_spatial(model, layer):
        try:
            shape = tuple(layer_output(model, layer).shape)
        except (AttributeError, ValueError):
            shape = "?"
        raise UserError(
            f"layer '{name}' ({type(layer).__name__}, output {shape}) is not "
            f"convolutional: Grad-CAM needs spatial feature maps; choose one of: {listing}"
        )
    return layer


def output_layer(model):
    if len(model.outputs) != 1:
        raise UserError(
            f"model '{model.name}' has {len(model.outputs)} outputs; Grad-CAM explains "
            "a classifier with one output"
        )
    return model.outputs[0]._keras_history.operation


def activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", "")


def squashing_layer(layer):
    """The layer whose softmax/sigmoid produces `layer`'s output (looking into a nested head)."""
    if isinstance(layer, keras.Model):
        return squashing_layer(output_layer(layer))
    return layer if activation_name(layer) in SQUASHING else None


class GradCAM:
    """Grad-CAM for one model and one target layer; call it on a batch of images.

    The score model returns the target layer's feature maps and the input of the output layer;
    the logits are computed from the latter inside the gradient tape by the output layer itself
    with its activation switched off, so they always use the model's current weights (the
    randomisation test changes them).
    """

    def __init__(self, model, layer_name=None):
        self.model = model
        self.layer = find_target_layer(model, layer_name)
        self.head = output_layer(model)
        self.squash = squashing_layer(self.head)
        if self.squash is not None:
            self.kind, last = activation_name(self.squash), layer_input(model, self.head)
        else:  # a linear output is already a logit; anything else is used as it is
            self.kind = "logit" if activation_name(self.head) == "linear" else "score"
            last = model.outputs[0]
        self.score_model = keras.Model(model.inputs, [layer_output(model, self.layer), last])
        self.n_outputs = int(model.outputs[0].shape[-1])
        self.n_classes = 2 if self.n_outputs == 1 else self.n_outputs

    def to_logits(self, last):
        """The output layer without its squashing activation, using its current weights."""
        if self.squash is None:
            return last
        saved = self.squash.activation
        self.squash.activation = keras.activations.linear
        try:
            return self.head(last, training=False)
        finally:
            self.squash.activation = saved

    def probabilities(self, logits):
        """(N, n_classes) class probabilities from the logits (two columns for one sigmoid unit)."""
        if self.kind == "score":
            p = logits
        elif self.n_outputs == 1:
            p = tf.sigmoid(logits)
        else:
            p = tf.nn.softmax(logits, axis=-1)
        return tf.concat([1.0 - p, p], axis=-1) if self.n_outputs == 1 else p

    def class_score(self, logits, class_index):
        """Score of each image's target class; a single sigmoid logit is negated for class 0."""
        if self.n_outputs == 1:
            sign = tf.where(class_index == 1, 1.0, -1.0)
            return sign * logits[:, 0]
        return tf.gather(logits, class_index, axis=1, batch_dims=1)

    def __call__(self, images, class_index=None):
        """Maps (N, h, w) in [0, 1] at the layer's resolution, class probabilities and targets.

        `class_index`: None for each image's predicted class, an int for one class, or one per
        image.
        """
        images = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        with tf.GradientTape() as tape:
            features, last = self.score_model(images, training=False)
            logits = tf.cast(self.to_logits(last), tf.float32)
            probabilities = self.probabilities(logits)
            targets = self.targets(probabilities, class_index, images.shape[0])
            score = self.class_score(logits, targets)
        # Images do not interact in inference mode, so one gradient of the summed scores gives
        # every image's own gradient.
        gradients = tape.gradient(score, features)
        if gradients is None:
            raise UserError(
                f"layer '{self.layer.name}' does not lead to the model's output; "
                "choose a convolutional layer on the path to the prediction"
            )
        maps = weighted_maps(features, gradients)
        return maps.numpy(), probabilities.numpy(), targets.numpy()

    def targets(self, probabilities, class_index, n):
        if class_index is None:
            return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,))
        if targets.min() < 0 or targets.max() >= self.n_classes:
            raise UserError(
                f"class {int(targets.max())} does not exist: the model has "
                f"{self.n_classes} classes (0-{self.n_classes - 1})"
            )
        return tf.constant(targets)


def weighted_maps(features, gradients):
    """Channel weights = mean gradient; map = ReLU(weighted sum), divided by its maximum.

    A map with no positive evidence stays all zero instead of becoming 0/0 = NaN.
    """
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * weights, axis=-1))
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, peak)


def gradcam(model, images, class_index=None, layer_name=None):
    """One-call Grad-CAM: (maps, probabilities, target classes); see `GradCAM`."""
    return GradCAM(model, layer_name)(images, class_index)


# ---------------------------------------------------------------------------------------------
# Display
# ---------------------------------------------------------------------------------------------
def upsample(cam, size):
    """Bilinear resize of one map to `size` (height, width), kept in [0, 1]."""
    resized = cv2.resize(
        np.asarray(cam, dtype=np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR
    )
    return np.clip(resized, 0.0, 1.0)


def as_rgb(image):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]


def heatmap(cam):
    """A map in [0, 1] as an RGB jet image (matplotlib colormaps are RGB, unlike OpenCV's BGR)."""
    return matplotlib.colormaps[COLORMAP](np.clip(cam, 0, 1))[..., :3].astype(np.float32)


def overlay(image, cam, alpha=OVERLAY_ALPHA):
    """The jet-coloured map over the image at `alpha`, as an RGB float image at the image's size."""
    rgb = as_rgb(image)
    if np.shape(cam) != rgb.shape[:2]:
        cam = upsample(cam, rgb.shape[:2])
    return (1.0 - alpha) * rgb + alpha * heatmap(cam)


# ---------------------------------------------------------------------------------------------
# Faithfulness: does the map point at the known region?
# ---------------------------------------------------------------------------------------------
def peak_position(cam):
    return np.unravel_index(int(np.argmax(cam)), np.shape(cam))


def pointing_hit(cam, mask, tolerance=0):
    """True when the map's maximum falls inside `mask` grown by `tolerance` pixels.

    The map is upsampled to the mask's size first. An all-zero map points nowhere: a miss.
    """
    mask = np.asarray(mask) > 0
    cam = upsample(cam, mask.shape) if np.shape(cam) != mask.shape else np.asarray(cam)
    if not np.any(cam > 0):
        return False
    if tolerance > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return bool(mask[peak_position(cam)])


def energy_inside(cam, mask):
    """Share of the map's total energy that lies inside `mask` (0 for an all-zero map)."""
    mask = np.asarray(mask) > 0
    cam = upsample(cam, mask.shape) if np.shape(cam) != mask.shape else np.asarray(cam)
    total = float(cam.sum())
    return float(cam[mask].sum() / total) if total > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Sanity checks
# ---------------------------------------------------------------------------------------------
def rank_correlation(a, b):
    """Spearman correlation of two maps; 0 when either is constant (it has no ranking to share)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def mean_rank_correlation(maps_a, maps_b):
    return float(np.mean([rank_correlation(a, b) for a, b in zip(maps_a, maps_b)]))


def reinitialise(layer, seed):
    """Draw the layer's trainable weights afresh from its own initialisers (seeded)."""
    for i, variable in enumerate(layer.trainable_weights):
        initializer = getattr(layer, f"{variable.name}_initializer", None)
        if initializer is None:
            initializer = keras.initializers.GlorotUniform() if len(variable.shape) > 1 else "zeros"
        initializer = keras.initializers.get(initializer)
        config = initializer.get_config()
        if "seed" in config:
            config["seed"] = seed + i
        initializer = type(initializer).from_config(config)
        variable.assign(initializer(variable.shape, dtype=variable.dtype))


def randomisation_test(model, images, layer_name=None, class_index=None, seed=0):
    """Cascading model-randomisation test on a copy of `model`.

    Re-initialises the weighted layers one at a time from the output down to the input and, after
    each step, compares the maps with the trained model's maps by their mean Spearman correlation.
    The target class stays the trained model's (predicted) class, so only the weights change.
    Returns [(layer randomised last, mean correlation), ...] from the top down.
    """
    trained_maps, _, targets = GradCAM(model, layer_name)(images, class_index)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    explain = GradCAM(copy, layer_name)
    cascade = []
    weighted = [layer for layer in copy.layers if layer.trainable_weights]
    for step, layer in enumerate(reversed(weighted)):
        reinitialise(layer, seed + 1000 * step)
        maps, _, _ = explain(images, targets)
        cascade.append((layer.name, mean_rank_correlation(trained_maps, maps)))
    return cascade


def class_map_correlation(explain, images):
    """Mean Spearman correlation between each image's class-0 and class-1 maps, and how many of
    those maps were all zero (no positive evidence for that class anywhere; correlation 0)."""
    maps0, _, _ = explain(images, 0)
    maps1, _, _ = explain(images, 1)
    all_zero = int(sum(np.ptp(m) == 0 for m in np.concatenate([maps0, maps1])))
    return mean_rank_correlation(maps0, maps1), all_zero
