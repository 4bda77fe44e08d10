"""Benchmark (not a test): how close the project's heavy steps come to what this machine can do.

First the machine's peak, measured as the best rate of a large matrix product (float32, and
bfloat16, which is native on GPUs and on CPUs with AVX512-BF16/AMX and emulated elsewhere); then
three steps as the scripts run them, each after a warm-up, with its arithmetic counted from the
model's layers:

- the U-Net training step of main_segmentation.py (256 px, base 8, depth 4, batch 4, bce);
- the frozen VGG16 feature extraction of transfer_vgg16.py (224 px, batch 8), in float32 and with
  --feature-precision bfloat16 (with the features' error against float32's);
- the cam_vgg16.py classifier's training step (the lab network: 128 px, one channel, base 8,
  batch 8).

Prints each step's seconds, achieved GFLOP/s and share of the float32 peak measured right before
it (so that both see the same neighbours), and the load average after each: the absolute figures
mean something only on an otherwise idle machine. Times are the best of `--repeats` calls, the
closest the step came to the hardware, as the peak is.

    python bench/hardware.py [--repeats 10] [--matrix 2048]
    python bench/hardware.py --repeats 2 --matrix 256 --small    # a quick check that it runs
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per step")
    parser.add_argument("--matrix", type=int, default=2048, help="side of the peak's matrices")
    parser.add_argument("--small", action="store_true", help="tiny inputs: checks that it runs")
    return parser.parse_args()


def best_seconds(call, repeats, warmups=2):
    """The fastest of `repeats` timed calls of `call` (which returns when its work is done)."""
    for _ in range(warmups):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


# ----------------------------------------------------------------------------- arithmetic


def forward_flops(model):
    """Floating-point operations of one image's forward pass through `model`'s convolutions and
    dense layers (a multiply-add is 2; activations, pooling and the like are left out)."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            # every input pixel is spread over a kernel's window of outputs
            height, width, inputs = layer.input.shape[1:]
            total += 2 * height * width * np.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2 * height * width * np.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * np.prod(layer.kernel.shape)
    return int(total)


def training_flops(model, batch):
    """A training step: the forward pass, the gradients of the inputs of each layer and those of
    its weights, each as much arithmetic as the forward pass (3x; the optimizer is negligible)."""
    return 3 * forward_flops(model) * batch


# ----------------------------------------------------------------------------- peak


def peak_rate(size, dtype, repeats):
    """Best GFLOP/s of a `size` x `size` matrix product in `dtype` on the default device."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (tf.cast(rng.standard_normal((size, size)), dtype) for _ in range(2))
    product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1], tf.float32)))
    seconds = best_seconds(lambda: product().numpy(), repeats)
    return 2 * size**3 / seconds / 1e9


# ----------------------------------------------------------------------------- the steps


def unet_step(repeats, small):
    import keras

    import unet

    size, batch = (32, 2) if small else (256, 4)
    keras.utils.set_random_seed(0)
    model = unet.compile_unet(unet.build_unet((size, size, 1), base=8, depth=4), "bce", 1e-4)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, size, size, 1)).astype(np.float32)
    masks = (rng.uniform(size=images.shape) > 0.5).astype(np.float32)
    seconds = best_seconds(lambda: model.train_on_batch(images, masks), repeats)
    return seconds, training_flops(model, batch), f"{size} px, base 8, depth 4, batch {batch}"


def extraction(repeats, small, precision):
    """Seconds per batch of `transfer_vgg16.py`'s backbone call, and the batch's features."""
    import keras

    from medlab.classification import transfer

    size, batch = (32, 2) if small else (224, 8)
    keras.utils.set_random_seed(0)  # random weights: the arithmetic, and so the time, is the same
    transfer.check_native_bfloat16 = lambda *refusal: None  # measured here even where emulated
    backbone = transfer.load_backbone("none", size, precision)
    pixels = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
    inputs = transfer.to_backbone_input(pixels, "vgg16")
    seconds = best_seconds(lambda: np.asarray(backbone.predict_on_batch(inputs)), repeats)
    features = np.asarray(backbone.predict_on_batch(inputs)).astype(np.float32)
    flops = forward_flops(backbone) * batch
    return seconds, flops, f"{size} px, batch {batch}, {precision}", features


def cam_step(repeats, small):
    import keras

    import cam_vgg16
    from medlab.classification import cam
    from medlab.classification.train import targets_for

    params = {**cam_vgg16.PARAMETERS, "size": 32 if small else cam_vgg16.PARAMETERS["size"]}
    size, batch, channels = params["size"], params["batch_size"], params["channels"]
    keras.utils.set_random_seed(0)
    model = cam.build_model(params)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, channels)).astype(np.float32)
    targets = targets_for(model, rng.integers(0, 2, batch))
    seconds = best_seconds(lambda: model.train_on_batch(images, targets), repeats)
    described = f"{size} px, {channels} channel, base {params['base']}, batch {batch}"
    return seconds, training_flops(model, batch), described


# ----------------------------------------------------------------------------- report


def load_average():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if os.name == "posix" else "?"


def main():
    args = parse_arguments()
    from medlab import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    from medlab.distribute import cpu_supports_bfloat16, gpu_count

    before = load_average()
    device = "GPU" if gpu_count() else f"{os.cpu_count()} CPU cores"
    native = bool(gpu_count() or cpu_supports_bfloat16())
    bf16_peak = peak_rate(args.matrix, tf.bfloat16, args.repeats)
    print(
        f"{device}, TensorFlow {tf.__version__}; bfloat16 {args.matrix}x{args.matrix} product: "
        f"{bf16_peak:.1f} GFLOP/s ({'native' if native else 'emulated: no AVX512-BF16/AMX'})"
    )
    steps = [
        ("U-Net training step", lambda: unet_step(args.repeats, args.small)),
        ("VGG16 feature extraction", lambda: extraction(args.repeats, args.small, "float32")),
        ("VGG16 feature extraction", lambda: extraction(args.repeats, args.small, "bfloat16")),
        ("cam_vgg16 training step", lambda: cam_step(args.repeats, args.small)),
    ]
    print(
        "\n| step | input | GFLOP per call | seconds (best) | GFLOP/s | float32 peak just "
        "before, GFLOP/s | share of it | load average |"
    )
    print("|---|---|---|---|---|---|---|---|")
    features = []
    for name, step in steps:
        # The peak is measured right before each step, so that both see the same neighbours.
        peak = peak_rate(args.matrix, tf.float32, args.repeats)
        seconds, flops, described, *extracted = step()
        features += extracted
        rate = flops / seconds / 1e9
        print(
            f"| {name} | {described} | {flops / 1e9:.1f} | {seconds:.3f} | {rate:.1f} | "
            f"{peak:.1f} | {rate / peak:.0%} | {load_average()} |",
            flush=True,
        )
    full, half = features
    error = np.sqrt(np.mean((half - full) ** 2) / np.mean(full**2))
    print(
        f"\nbfloat16 features {error:.2%} RMS from float32's (random weights); load average "
        f"(1, 5, 15 min) before {before}, after {load_average()}"
    )


if __name__ == "__main__":
    main()
