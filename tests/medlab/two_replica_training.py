"""Run by test_distribute.py in a fresh process: the host CPU is split into 2 logical devices
before TensorFlow initialises them, then the same tiny U-Net is trained twice with the same seed
and global batch, on one device and mirrored over both. Prints one JSON line with the results.

The one-device run is a MirroredStrategy over one device rather than the default strategy:
under any strategy but the default, Keras draws one batch to build the model before the first
epoch, which advances the shuffling by one epoch, so only the same code path sees the same order.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from medlab import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import numpy as np  # noqa: E402

import unet  # noqa: E402
from medlab.app.runs import set_seed  # noqa: E402
from medlab.distribute import Scaling, make_strategy  # noqa: E402
from medlab.plots import read_history  # noqa: E402

GLOBAL_BATCH = 8
# No dropout or batch norm: both runs must do exactly the same arithmetic, up to summation order.
PARAMETERS = {
    "size": 32,
    "base": 2,
    "depth": 2,
    "dropout": 0.0,
    "batch_norm": False,
    "loss": "bce",
    "lr": 1e-2,
    "lr_schedule": "constant",
    "epochs": 2,
    "augment": True,
    "augment_intensity": False,
    "seed": 3,
}


def pattern_data(count=24, size=32):
    """Bright rectangles that are exactly the masks, so the loss has something to learn."""
    rng = np.random.default_rng(0)
    masks = np.zeros((count, size, size, 1), np.float32)
    for i, (top, left) in enumerate(rng.integers(2, size // 2, (count, 2))):
        masks[i, top : top + 10, left : left + 12] = 1
    images = masks * 0.6 + rng.uniform(0, 0.3, masks.shape).astype(np.float32)
    return {"train": (images[:16], masks[:16]), "val": (images[16:], masks[16:]), "cache": "memory"}


def train_under(strategy, per_replica_batch, run_dir):
    scaling = Scaling(strategy)
    set_seed(PARAMETERS["seed"])
    datasets = unet.experiment_datasets(
        PARAMETERS, pattern_data(), scaling.global_batch(per_replica_batch)
    )
    p = PARAMETERS
    with scaling.scope():
        model = unet.build_unet((p["size"], p["size"], 1), p["base"], p["depth"])
        unet.compile_unet(model, p["loss"], p["lr"], jit_compile=scaling.jit)
    unet.train(model, *datasets, p["epochs"], Path(run_dir), verbose=2)
    return (
        scaling.replicas,
        model.get_weights(),
        read_history(Path(run_dir) / "history.csv")["loss"],
    )


def main():
    make_strategy("auto", batch_size=GLOBAL_BATCH)  # two logical CPUs are not GPUs: one replica
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        single = train_under(tf.distribute.MirroredStrategy(["/cpu:0"]), GLOBAL_BATCH, one)
        mirrored = train_under(make_strategy("mirrored", GLOBAL_BATCH // 2), GLOBAL_BATCH // 2, two)
    print(
        json.dumps(
            {
                "replicas": [single[0], mirrored[0]],
                "losses": [list(map(float, single[2])), list(map(float, mirrored[2]))],
                "max_weight_difference": max(
                    float(np.max(np.abs(a - b))) for a, b in zip(single[1], mirrored[1])
                ),
                "max_weight": max(float(np.max(np.abs(a))) for a in single[1]),
            }
        )
    )


if __name__ == "__main__":
    main()
