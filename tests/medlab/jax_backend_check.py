"""Run by test_jax_backend.py in a fresh process with KERAS_BACKEND=jax: loads the U-Net that the
test saved under TensorFlow and predicts with it, scores a known pair with the training metric and
losses, trains a tiny U-Net one epoch as main_segmentation.py
compiles it by default, and saves it. Writes its results to the .npz named as the
first argument; prints the backend it ran on."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import main_segmentation  # noqa: E402
import unet  # noqa: E402
from medlab.distribute import configure_scaling  # noqa: E402


def main(folder):
    folder = Path(folder)
    inputs = np.load(folder / "inputs.npz")
    from_tensorflow = unet.load_unet(folder / "tensorflow.keras")
    truth, prediction = inputs["truth"], inputs["prediction"]
    keras.utils.set_random_seed(0)
    # As main_segmentation.py trains it: the shipped --jit setting, resolved for this backend.
    scaling = configure_scaling("default", "off", main_segmentation.PARAMETERS["jit"])
    model = unet.compile_unet(
        unet.build_unet((16, 16, 1), base=2, depth=2), "bce_dice", 1e-2, jit_compile=scaling.jit
    )
    dataset = unet.make_dataset(inputs["images"], inputs["masks"], 4, shuffle=True)
    model.fit(dataset, epochs=1, verbose=0)
    model.save(folder / "jax.keras")
    np.savez(
        folder / "jax_results.npz",
        tensorflow_model_on_jax=from_tensorflow.predict(inputs["images"], verbose=0),
        jax_model_on_jax=model.predict(inputs["images"], verbose=0),
        dice=keras.ops.convert_to_numpy(unet.dice_coefficient(truth, prediction)),
        dice_loss=keras.ops.convert_to_numpy(unet.dice_loss(truth, prediction)),
        bce_dice=keras.ops.convert_to_numpy(unet.bce_dice_loss(truth, prediction)),
        compiled_by_default=model.jit_compile,
        compiled_with_no_jit=configure_scaling("default", "off", False).jit,
    )
    print(f"backend {keras.backend.backend()}")


if __name__ == "__main__":
    main(sys.argv[1])
