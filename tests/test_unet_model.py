"""The U-Net's structure follows its flags."""

import keras
import pytest

import unet
from medlab.errors import UserError


def layer_types(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_plain_unet_has_no_batch_norm_or_dropout_and_the_right_widths():
    model = unet.build_unet((64, 64, 1), base=4, depth=3)
    assert model.output_shape == (None, 64, 64, 1)
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert not layer_types(model, keras.layers.BatchNormalization)
    assert not layer_types(model, keras.layers.Dropout)
    convs = [
        layer.filters
        for layer in layer_types(model, keras.layers.Conv2D)
        if layer.name.endswith("_conv1")
    ]
    assert convs == [4, 8, 16, 32, 16, 8, 4]  # 3 levels down, bottleneck 8x, 3 levels up
    assert len(layer_types(model, keras.layers.Conv2DTranspose)) == 3


def test_batch_norm_sits_between_each_convolution_and_its_relu():
    model = unet.build_unet((32, 32, 1), base=2, depth=2, batch_norm=True)
    norms = layer_types(model, keras.layers.BatchNormalization)
    assert len(norms) == 2 * (2 + 1 + 2)  # two per conv block, five blocks
    for norm in norms:
        conv = norm._inbound_nodes[0].parent_nodes[0].operation
        assert isinstance(conv, keras.layers.Conv2D) and not conv.use_bias
        consumer = model.get_layer(norm.name.replace("_bn", "_relu"))
        assert consumer._inbound_nodes[0].parent_nodes[0].operation is norm


def test_dropout_follows_each_pooling_and_concatenation_with_the_rate():
    model = unet.build_unet((32, 32, 1), base=2, depth=3, dropout=0.3)
    drops = layer_types(model, keras.layers.Dropout)
    assert len(drops) == 6 and all(d.rate == pytest.approx(0.3) for d in drops)
    for drop in drops:
        source = drop._inbound_nodes[0].parent_nodes[0].operation
        assert isinstance(source, (keras.layers.MaxPooling2D, keras.layers.Concatenate))


def test_size_must_divide_by_two_to_the_depth():
    with pytest.raises(UserError, match="divisible"):
        unet.build_unet((100, 100, 1), depth=4)


def test_base_scales_the_parameter_count():
    small = unet.build_unet((32, 32, 1), base=4, depth=2).count_params()
    large = unet.build_unet((32, 32, 1), base=8, depth=2).count_params()
    assert 3.5 < large / small < 4.1  # convolution weights grow with base squared


def test_normalize_image_standardises_each_input_so_exposure_does_not_matter(tmp_path):
    import numpy as np

    model = unet.build_unet((32, 32, 1), base=2, depth=2, normalize="image")
    standardize = keras.Model(model.input, model.get_layer("standardize").output)
    images = np.random.default_rng(0).uniform(0.2, 0.6, (3, 32, 32, 1)).astype("float32")
    out = standardize.predict(images, verbose=0)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=0.01)
    brighter = images * 1.5 + 0.1  # another exposure of the same films
    np.testing.assert_allclose(
        model.predict(brighter, verbose=0), model.predict(images, verbose=0), atol=1e-3
    )
    model.save(tmp_path / "model.keras")
    loaded = unet.load_unet(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    plain = unet.build_unet((32, 32, 1), base=2, depth=2)
    assert "standardize" not in [layer.name for layer in plain.layers]
