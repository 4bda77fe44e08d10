"""The U-Net on the JAX backend: the same losses and metric values as on TensorFlow, and models
saved under either backend load and predict the same masks under the other."""

import os
import subprocess
import sys

import keras
import numpy as np
from helpers import ROOT

import unet


def test_a_unet_saved_under_either_backend_predicts_the_same_under_the_other(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (8, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    truth = np.zeros((2, 4, 4, 1), np.float32)
    truth[:, :2] = 1  # 8 lung pixels per image
    prediction = np.full((2, 4, 4, 1), 0.5, np.float32)  # overlap 4, sums 8 + 8
    np.savez(
        tmp_path / "inputs.npz", images=images, masks=masks, truth=truth, prediction=prediction
    )
    keras.utils.set_random_seed(1)
    tensorflow_model = unet.compile_unet(unet.build_unet((16, 16, 1), base=2, depth=2), "bce", 1e-2)
    tensorflow_model.save(tmp_path / "tensorflow.keras")

    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "medlab" / "jax_backend_check.py"), str(tmp_path)],
        env=dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend jax" in result.stdout
    jax = np.load(tmp_path / "jax_results.npz")
    # Soft Dice of the module docstring: (2 * 4 + 1) / (8 + 8 + 1) per image.
    np.testing.assert_allclose(jax["dice"], 9 / 17, rtol=1e-6)
    np.testing.assert_allclose(jax["dice_loss"], 1 - 9 / 17, rtol=1e-6)
    np.testing.assert_allclose(
        jax["bce_dice"], unet.bce_dice_loss(truth, prediction).numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(
        jax["tensorflow_model_on_jax"], tensorflow_model.predict(images, verbose=0), atol=1e-5
    )
    jax_model = unet.load_unet(tmp_path / "jax.keras")
    np.testing.assert_allclose(
        jax_model.predict(images, verbose=0), jax["jax_model_on_jax"], atol=1e-5
    )
    assert np.ptp(jax["jax_model_on_jax"]) > 0  # not a constant output
    # Compiled (jax.jit) by default, as Keras does on JAX; --no-jit still runs op by op.
    assert jax["compiled_by_default"] and not jax["compiled_with_no_jit"]
