"""Benchmark of transfer_vgg16.py's feature cache (not a test; prints timings and ratios).

1. Head training on cached features vs an end-to-end model (the same frozen VGG16 + the same head)
   fitted for the same epochs on the same images. Target: >= 20x faster at 20 epochs, 200 images.
2. Feature-extraction throughput (decode from disk + backbone, as transfer_vgg16.py does it) vs a
   raw `predict` on images already in memory. Target: >= 0.9.

    python bench/transfer_cache.py                             # 200 images, 20 epochs, 224x224
    python bench/transfer_cache.py --e2e-epochs 1 --repeats 2  # time 1 e2e epoch, scale to 20

The weights do not change the timings, so the backbone is randomly initialised (no download).
Images are the synthetic Skin set (generated under data/synthetic on first use) unless --data-dir.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlab.classification import transfer  # noqa: E402
from medlab.classification.data import load_class_split  # noqa: E402
from medlab.classification.train import compile_classifier  # noqa: E402
from medlab.synthetic.skin_bone import synthetic_class_set  # noqa: E402


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--e2e-epochs",
        type=int,
        default=0,
        help="time only this many end-to-end epochs and scale to --epochs (0: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternating rounds of extraction and predict; the fastest of each counts",
    )
    parser.add_argument("--data-dir", default="", help="a class folder (default: synthetic Skin)")
    return parser.parse_args()


def bench_images(data_dir, count):
    """The first `count` training (then validation) images and their labels."""
    split = load_class_split(data_dir or synthetic_class_set("skin"))
    paths = (list(split.train_paths) + list(split.val_paths))[:count]
    labels = np.concatenate([split.train_labels, split.val_labels])[:count]
    if len(paths) < count:
        raise SystemExit(f"only {len(paths)} images in {data_dir}; lower --images")
    return paths, labels


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def extraction_vs_predict(backbone, paths, size, repeats):
    """Seconds of cached extraction (cold cache) and of predict on preloaded arrays.

    The two are timed alternately and the fastest of `repeats` rounds is kept for each, so that
    other programs' load on a shared machine does not decide the ratio.
    """
    warm = transfer.to_backbone_input(transfer.load_batch(paths[:16], size), "vgg16")
    backbone.predict(warm, batch_size=16, verbose=0)  # graph tracing is not throughput
    backbone.predict_on_batch(warm)
    preloaded = transfer.to_backbone_input(transfer.load_batch(paths, size), "vgg16")
    extract_times, predict_times = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            (features, _), seconds = timed(
                transfer.cached_features, backbone, paths, size, "vgg16", cache, "bench"
            )
        extract_times.append(seconds)
        predict_times.append(timed(backbone.predict, preloaded, batch_size=16, verbose=0)[1])
    print(
        f"extraction rounds {[round(t, 1) for t in extract_times]} s, "
        f"predict rounds {[round(t, 1) for t in predict_times]} s"
    )
    return features, preloaded, min(extract_times), min(predict_times)


def fit_seconds(model, inputs, labels, epochs, batch_size, verbose=0):
    """Seconds of `epochs` of training, after one traced warm-up step (tracing is not speed)."""
    compile_classifier(model, 1e-5)
    model.fit(inputs[:8], labels[:8, None], epochs=1, verbose=0)
    _, seconds = timed(
        model.fit,
        inputs,
        labels[:, None],
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=verbose,
    )
    return seconds


def head_fit_seconds(features, labels, epochs, batch_size):
    head = transfer.build_head(features.shape[1:], 128, 0.5)
    return head, fit_seconds(head, features, labels, epochs, batch_size)


def end_to_end_fit_seconds(backbone, head, images, labels, epochs, batch_size):
    """The frozen backbone and the head as one model, fed preprocessed images every epoch."""
    import keras

    inputs = keras.Input(shape=images.shape[1:])
    x = inputs
    for layer in backbone.layers[1:]:
        x = layer(x)
    for layer in head.layers[1:]:
        x = layer(x)
    model = keras.Model(inputs, x)
    verbose = 1 if sys.stdout.isatty() else 2
    return fit_seconds(model, images, labels, epochs, batch_size, verbose)


def main():
    args = parse_arguments()
    import keras

    keras.utils.set_random_seed(0)
    paths, labels = bench_images(args.data_dir, args.images)
    backbone = transfer.load_backbone("none", args.image_size)
    features, images, extract_s, predict_s = extraction_vs_predict(
        backbone, paths, args.image_size, args.repeats
    )
    head, head_s = head_fit_seconds(
        features, labels.astype(np.float32), args.epochs, args.batch_size
    )
    e2e_epochs = args.e2e_epochs or args.epochs
    e2e_s = (
        end_to_end_fit_seconds(
            backbone, head, images, labels.astype(np.float32), e2e_epochs, args.batch_size
        )
        * args.epochs
        / e2e_epochs
    )
    n = len(paths)
    print(
        f"\n{n} images at {args.image_size}x{args.image_size}, {args.epochs} epochs, batch "
        f"{args.batch_size}, {keras.config.backend()} backend"
    )
    print(
        f"feature extraction (decode + VGG16, cold cache): {extract_s:7.1f} s  "
        f"{n / extract_s:6.2f} images/s"
    )
    print(
        f"raw predict on preloaded arrays:                 {predict_s:7.1f} s  "
        f"{n / predict_s:6.2f} images/s"
    )
    print(
        f"  throughput ratio extraction / raw predict: {predict_s / extract_s:.2f}  (target >= 0.9)"
    )
    scaled = (
        ""
        if e2e_epochs == args.epochs
        else f" (timed {e2e_epochs} epochs, scaled to {args.epochs})"
    )
    print(f"head training on cached features:           {head_s:7.1f} s")
    print(f"end-to-end training with frozen backbone:   {e2e_s:7.1f} s{scaled}")
    print(f"  speed-up of head training: {e2e_s / head_s:.0f}x  (target >= 20x)")
    print(f"  speed-up including one extraction: {e2e_s / (head_s + extract_s):.1f}x")


if __name__ == "__main__":
    main()
