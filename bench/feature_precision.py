"""Benchmark (not a test): frozen VGG16 features in bfloat16 (--feature-precision bfloat16) against
float32, on a two-class image folder: extraction speed, the features' error, and the AUC of the
transfer head trained on each (same split, same seeds), with a paired bootstrap interval.

    python bench/feature_precision.py --data-dir data/Skin [--per-class 150] [--image-size 128]
        [--weights none] [--epochs 30] [--seeds 0 1]

Both extractions run through `transfer_vgg16.py`'s own path (`transfer.run_backbone`), one after
the other in this process. bfloat16 is measured even where the hardware only emulates it (the
script itself refuses it there), and the output says which. The head is transfer_vgg16.py's, with
its parameters except --epochs and --lr.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="a folder of two class folders")
    parser.add_argument("--per-class", type=int, default=150, help="images taken from each class")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--weights", default="none", help="none, imagenet or a notop file")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--validation", type=float, default=0.3, help="share held out, per class")
    return parser.parse_args()


def sample(data_dir, per_class, validation):
    """`per_class` files of each class (a seeded draw), labels, and a stratified validation mask."""
    from medlab.images import IMAGE_EXTENSIONS

    rng = np.random.default_rng(0)
    paths, labels, held_out = [], [], []
    classes = sorted(p for p in Path(data_dir).iterdir() if p.is_dir())
    for label, folder in enumerate(classes):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        chosen = rng.permutation(len(files))[:per_class]
        paths += [str(files[i]) for i in chosen]
        labels += [label] * len(chosen)
        held_out += [i < round(validation * len(chosen)) for i in range(len(chosen))]
    return paths, np.array(labels), np.array(held_out), [c.name for c in classes]


def extract(paths, args, precision):
    import keras

    from medlab.classification import transfer

    keras.utils.set_random_seed(0)  # the same random weights (--weights none) both ways
    backbone = transfer.load_backbone(args.weights, args.image_size, precision)
    started = time.perf_counter()
    features = transfer.run_backbone(backbone, paths, args.image_size, "vgg16")
    return features, time.perf_counter() - started


def head_scores(features, labels, held_out, args, seed, folder):
    import transfer_vgg16
    from medlab.app.runs import set_seed
    from medlab.distribute import single_device

    p = {**transfer_vgg16.PARAMETERS, "epochs": args.epochs, "lr": args.lr}
    set_seed(seed)
    train, val = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    csv = Path(folder) / f"seed{seed}-{features.dtype}-{id(features)}" / "history.csv"
    csv.parent.mkdir(parents=True)
    _, scores, _ = transfer_vgg16.train_transfer(
        features, labels, train, val, p, seed, csv, single_device()
    )
    return np.asarray(scores)


def main():
    args = parse_arguments()
    from medlab import quiet_tensorflow

    quiet_tensorflow()
    from medlab.classification import transfer
    from medlab.classification.metrics import bootstrap_metrics, roc_auc
    from medlab.distribute import cpu_supports_bfloat16, gpu_count

    native = bool(gpu_count() or cpu_supports_bfloat16())
    transfer.check_native_bfloat16 = lambda *refusal: None  # measured here even where emulated
    paths, labels, held_out, classes = sample(args.data_dir, args.per_class, args.validation)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    full, full_seconds = extract(paths, args, "float32")
    half, half_seconds = extract(paths, args, "bfloat16")
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    error = np.sqrt(np.mean((half - full) ** 2) / np.mean(full**2))
    counts = ", ".join(f"{name} {n}" for name, n in zip(classes, np.bincount(labels)))
    print(
        f"\n{len(paths)} images ({counts}) at {args.image_size} px, weights {args.weights}; "
        f"bfloat16 {'native' if native else 'EMULATED (no AVX512-BF16/AMX, no GPU)'}; load average "
        f"before {' '.join(load_before)}, after {' '.join(load_after)}"
    )
    print(
        f"extraction: float32 {full_seconds:.1f} s, bfloat16 {half_seconds:.1f} s "
        f"({full_seconds / half_seconds:.2f}x float32's speed); bfloat16 features {error:.2%} RMS "
        "from float32's"
    )
    truth = labels[held_out]
    print(f"\nhead: {args.epochs} epochs, lr {args.lr}, {truth.size} validation images")
    print("| seed | AUC float32 | AUC bfloat16 | bfloat16 - float32 [95% paired bootstrap] |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            scores = {
                "bfloat16": head_scores(half, labels, held_out, args, seed, folder),
                "float32": head_scores(full, labels, held_out, args, seed, folder),
            }
            low, high = bootstrap_metrics(truth, scores)["difference"]["auc"]
            aucs = {name: roc_auc(truth, values) for name, values in scores.items()}
            print(
                f"| {seed} | {aucs['float32']:.3f} | {aucs['bfloat16']:.3f} | "
                f"{aucs['bfloat16'] - aucs['float32']:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )


if __name__ == "__main__":
    main()
