"""Benchmark (not a test): does the segmentation input pipeline slow training down?

Trains the 4e U-Net (base 16, batch norm, dropout 0.2) for a few epochs twice on the same pairs:
  A. the real pipeline: files decoded by unet.load_images/load_masks, then the tf.data pipeline with
     shuffling and joint augmentation (unet.make_dataset);
  B. the same model fed preloaded tensors with model.fit(x, y), no augmentation.
Prints the per-epoch time of each and the ratio A/B (target <= 1.10), plus the one-off load time.

    python bench/input_pipeline.py [--pairs 64] [--size 128] [--epochs 3]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import unet  # noqa: E402
from medlab.app.runs import set_seed  # noqa: E402
from medlab.synthetic.xray import write_chest_xrays  # noqa: E402


def epoch_seconds(model, fit, epochs):
    fit(model, 1)  # warm-up: graph tracing and first allocations
    start = time.perf_counter()
    fit(model, epochs)
    return (time.perf_counter() - start) / epochs


def fresh_model(size):
    set_seed(0)
    return unet.compile_unet(
        unet.build_unet((size, size, 1), base=16, depth=4, dropout=0.2, batch_norm=True),
        "bce",
        1e-4,
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_chest_xrays(Path(tmp) / "X_ray", args.pairs, 256, seed=0)
        start = time.perf_counter()
        image_paths, mask_paths = unet.find_pairs(Path(tmp) / "X_ray")
        images, masks = (
            unet.load_images(image_paths, args.size),
            unet.load_masks(mask_paths, args.size),
        )
        load_seconds = time.perf_counter() - start

    pipeline = unet.make_dataset(images, masks, args.batch_size, shuffle=True, augment=True, seed=0)
    with_pipeline = epoch_seconds(
        fresh_model(args.size),
        lambda m, e: m.fit(pipeline, epochs=e, verbose=0, shuffle=False),
        args.epochs,
    )
    preloaded = epoch_seconds(
        fresh_model(args.size),
        lambda m, e: m.fit(images, masks, batch_size=args.batch_size, epochs=e, verbose=0),
        args.epochs,
    )
    print(
        f"\n{args.pairs} pairs at {args.size}x{args.size}, 4e U-Net, batch {args.batch_size}, "
        f"{args.epochs} epochs"
    )
    print(f"loading and decoding once:               {load_seconds:6.2f} s")
    print(f"epoch, tf.data pipeline + augmentation:  {with_pipeline:6.2f} s")
    print(f"epoch, preloaded tensors, no augmentation: {preloaded:6.2f} s")
    print(f"ratio pipeline / preloaded: {with_pipeline / preloaded:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
