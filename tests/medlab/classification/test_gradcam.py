"""Grad-CAM on tiny models whose answer is known by construction.

The hand-built model sees a grey image: channel 0 of its convolution fires on bright pixels,
channel 1 on dark ones. Class 1 is scored by the bright evidence and class 0 by the dark evidence,
so the map of class 1 must peak on the bright square and the map of class 0 on the dark square.
"""

import keras
import numpy as np
import pytest
from keras import layers

from medlab.classification import gradcam
from medlab.classification.gradcam import GradCAM
from medlab.errors import UserError

BRIGHT = (slice(2, 8), slice(3, 9))  # 6x6: more evidence, so class 1 is predicted
DARK = (slice(22, 26), slice(20, 24))  # 4x4


def square_model(output="softmax", conv_name="Last_ConvLayer"):
    image = keras.Input((32, 32, 1))
    conv = layers.Conv2D(2, 3, padding="same", activation="relu", name=conv_name)
    pooled = layers.GlobalAveragePooling2D()(conv(image))
    units = 1 if output == "sigmoid" else 2
    head = layers.Dense(units, activation=output, name="prediction")
    model = keras.Model(image, head(pooled))
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[1, 1, 0] = [1.0, -1.0]  # channel 0: brighter than grey; channel 1: darker than grey
    conv.set_weights([kernel, np.array([-0.5, 0.5], np.float32)])
    if output == "sigmoid":  # logit = bright evidence - dark evidence
        head.set_weights([np.array([[100.0], [-100.0]], np.float32), np.zeros(1, np.float32)])
    else:  # logit 0 = dark evidence, logit 1 = bright evidence
        head.set_weights(
            [np.array([[0.0, 100.0], [100.0, 0.0]], np.float32), np.zeros(2, np.float32)]
        )
    return model


def grey_image(bright=BRIGHT, dark=DARK):
    image = np.full((32, 32, 1), 0.5, np.float32)
    if bright:
        image[bright] = 1.0
    if dark:
        image[dark] = 0.0
    return image


def peak(cam):
    return np.unravel_index(np.argmax(cam), cam.shape)


def inside(position, region):
    return all(s.start <= p < s.stop for p, s in zip(position, region))


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_map_peaks_where_the_class_evidence_is(output):
    explain = GradCAM(square_model(output))
    images = grey_image()[None]
    maps, probabilities, targets = explain(images)
    assert targets.tolist() == [1] and probabilities[0, 1] > 0.5
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert inside(peak(maps[0]), BRIGHT)
    class0, _, targets0 = explain(images, 0)
    assert targets0.tolist() == [0]
    assert inside(peak(class0[0]), DARK)
    assert class0[0][BRIGHT].max() == 0  # no class-0 evidence on the bright square
    class1, _, _ = explain(images, 1)
    np.testing.assert_allclose(class1, maps)
    assert maps.max() == pytest.approx(1.0) and maps.min() >= 0


def test_sigmoid_class0_is_the_negative_logit_not_argmax_of_one_output():
    """With only the dark square present, a single sigmoid unit predicts class 0 and explains it."""
    explain = GradCAM(square_model("sigmoid"))
    maps, probabilities, targets = explain(grey_image(bright=None)[None])
    assert targets.tolist() == [0] and probabilities[0, 0] > 0.5
    assert inside(peak(maps[0]), DARK)


def test_all_zero_map_has_no_nan():
    explain = GradCAM(square_model())
    maps, probabilities, _ = explain(grey_image(bright=None, dark=None)[None])  # nothing fires
    assert np.all(np.isfinite(maps)) and np.all(maps == 0)
    assert np.all(np.isfinite(probabilities))
    assert not gradcam.pointing_hit(maps[0], np.ones((32, 32)))
    assert gradcam.energy_inside(maps[0], np.ones((32, 32))) == 0.0


def test_default_layer_prefers_last_convlayer_then_last_convolution():
    image = keras.Input((16, 16, 1))
    x = layers.Conv2D(2, 3, name="Last_ConvLayer")(image)
    x = layers.Conv2D(2, 3, name="later_conv")(x)
    x = layers.Flatten(name="flatten")(x)
    model = keras.Model(image, layers.Dense(2, activation="softmax")(x))
    assert gradcam.find_target_layer(model).name == "Last_ConvLayer"
    assert gradcam.find_target_layer(square_model(conv_name="features")).name == "features"


def test_layers_reused_from_a_builder_model_are_found_in_the_new_graph():
    """Re-applying a built model's layers after a new input (e.g. a rescaling layer) gives each
    layer a second call; Grad-CAM must use the call that belongs to the model it explains."""
    core = square_model()
    pixels = keras.Input((32, 32, 1))
    x = layers.Rescaling(1.0, name="same_pixels")(pixels)
    for layer in core.layers[1:]:
        x = layer(x)
    maps, _, targets = GradCAM(keras.Model(pixels, x))(grey_image()[None])
    assert targets.tolist() == [1] and inside(peak(maps[0]), BRIGHT)


def test_bad_layer_names_are_user_errors():
    model = square_model()
    with pytest.raises(UserError, match="no layer named 'nope'.*Last_ConvLayer"):
        GradCAM(model, "nope")
    with pytest.raises(UserError, match="'prediction'.*not convolutional"):
        GradCAM(model, "prediction")


def transfer_model(nested):
    """VGG16 (random weights, small input) with a sigmoid head, flat or as a nested model."""
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    head = [
        layers.Flatten(),
        layers.Dense(8, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(1, activation="sigmoid"),
    ]
    if nested:
        return keras.Sequential([keras.Input((32, 32, 3)), backbone, *head])
    x = backbone.output
    for layer in head:
        x = layer(x)
    return keras.Model(backbone.input, x)


def test_flat_transfer_model_and_a_clear_error_for_a_nested_backbone():
    explain = GradCAM(transfer_model(nested=False))
    assert explain.layer.name == "block5_conv3"
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    maps, probabilities, _ = explain(images)
    assert maps.shape == (2, 2, 2) and np.all(np.isfinite(maps))
    assert probabilities.shape == (2, 2)
    with pytest.raises(UserError, match="flat graph"):
        GradCAM(transfer_model(nested=True), "block5_conv3")


def test_randomisation_lowers_the_correlation_and_leaves_the_model_alone():
    keras.utils.set_random_seed(0)
    model = square_model()
    rng = np.random.default_rng(1)
    images = []
    for _ in range(6):  # squares at random places
        y, x = rng.integers(0, 24, 2)
        image = grey_image(bright=None, dark=None)
        image[y : y + 6, x : x + 6] = 1.0
        images.append(image)
    before = [w.copy() for w in model.get_weights()]
    cascade = gradcam.randomisation_test(model, np.stack(images))
    assert [name for name, _ in cascade] == ["prediction", "Last_ConvLayer"]  # from the top down
    assert cascade[-1][1] < 0.5
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    maps, _, _ = GradCAM(model)(np.stack(images))
    assert gradcam.mean_rank_correlation(maps, maps) == pytest.approx(1.0)


def test_class_maps_differ_on_the_square_model():
    explain = GradCAM(square_model())
    correlation, all_zero = gradcam.class_map_correlation(explain, grey_image()[None])
    assert correlation < 0.5 and all_zero == 0


def test_overlay_is_rgb_jet_at_the_image_size():
    image = np.zeros((40, 60, 1), np.float32)
    hot = np.ones((5, 5), np.float32)  # the maximum everywhere: jet's dark red end
    out = gradcam.overlay(image, hot)
    assert out.shape == (40, 60, 3)
    np.testing.assert_allclose(out[0, 0], 0.4 * np.array(gradcam.heatmap(np.ones((1, 1)))[0, 0]))
    assert out[0, 0, 0] > 0.15 and out[0, 0, 2] == pytest.approx(0.0)  # red, not blue (no BGR swap)
    cold = gradcam.overlay(image, np.zeros((5, 5), np.float32))
    assert cold[0, 0, 2] > 0.15 and cold[0, 0, 0] == pytest.approx(0.0)


def test_upsampling_is_bilinear_and_pointing_allows_a_tolerance():
    cam = np.zeros((4, 4), np.float32)
    cam[1, 1] = 1.0
    big = gradcam.upsample(cam, (32, 32))
    assert big.shape == (32, 32) and len(np.unique(np.round(big, 3))) > 4  # smooth, not blocky
    assert gradcam.peak_position(big) in {(11, 11), (11, 12), (12, 11), (12, 12)}
    mask = np.zeros((32, 32), bool)
    mask[11:13, 16:20] = True  # 4-5 pixels right of the peak
    assert not gradcam.pointing_hit(big, mask)
    assert gradcam.pointing_hit(big, mask, tolerance=6)
    assert 0 < gradcam.energy_inside(big, mask) < 0.2
