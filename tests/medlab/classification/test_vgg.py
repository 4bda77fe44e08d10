"""medlab.classification.vgg: the shades-of-grey colour constancy layer and its saved models."""

import numpy as np
import pytest

from medlab.app import runs
from medlab.classification.vgg import ShadesOfGrey, build_vgg16_style


def test_a_uniformly_tinted_photo_becomes_grey_at_its_own_brightness():
    tinted = np.zeros((1, 8, 8, 3), np.float32) + np.array([0.8, 0.4, 0.2], np.float32)
    out = np.asarray(ShadesOfGrey()(tinted))
    np.testing.assert_allclose(out, np.full_like(tinted, (0.8 + 0.4 + 0.2) / 3), rtol=1e-5)


def test_the_same_scene_under_two_lights_comes_out_the_same():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.1, 0.6, (1, 16, 16, 3)).astype(np.float32)
    warm, cool = scene * [1.3, 1.0, 0.7], scene * [0.8, 1.0, 1.25]
    layer = ShadesOfGrey()
    warm_out, cool_out = np.asarray(layer(warm)), np.asarray(layer(cool))
    np.testing.assert_allclose(warm_out / warm_out.mean(), cool_out / cool_out.mean(), rtol=1e-4)
    assert np.abs(warm / warm.mean() - cool / cool.mean()).max() > 0.2  # they differed before


def test_black_images_and_black_channels_stay_black_without_nan():
    images = np.zeros((2, 8, 8, 3), np.float32)
    images[1, ..., 0] = 0.5  # a red image: green and blue are empty
    out = np.asarray(ShadesOfGrey()(images))
    assert np.isfinite(out).all() and out[0].max() == 0 and out[1, ..., 1:].max() == 0


def test_one_channel_images_pass_unchanged():
    gray = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ShadesOfGrey()(gray)), gray, atol=1e-6)


def test_a_model_with_colour_constancy_saves_and_loads_with_the_same_answers(tmp_path):
    model = build_vgg16_style((32, 32, 3), base=2, colour_constancy=True, pooling="avg")
    assert model.layers[1].name == "colour_constancy"
    model.save(tmp_path / "m.keras")
    loaded = runs.load_keras_model(tmp_path / "m.keras", "a test", compile=False)
    images = np.random.default_rng(2).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    assert np.asarray(loaded(images)) == pytest.approx(np.asarray(model(images)), abs=1e-6)
