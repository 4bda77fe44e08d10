"""Which loss for a small target (the handout's question in Task 4b), measured (not a test).

    python bench/small_target_loss.py                 # a small-target set, 4a (BCE) and 4b (Dice)
    python bench/small_target_loss.py --first RUN/STAMP-4a --second RUN/STAMP-4b \
        --data-dir data/X_ray                         # the same figure for two runs you made

Two pieces of evidence, in one figure and one summary.md:

1. What each loss charges for missing the target: the loss of a prediction that is right on
   the background and misses the target (probability 0.05 on it) minus that of the right mask,
   for a target covering a share `a` of the image, computed with the project's own losses
   (`unet.LOSSES`). Binary cross-entropy
   averages over pixels, so its charge shrinks with `a`; Dice loss charges about 1 at any size.
2. What training does with it: a generated set of images whose target is a disc covering 0.5%
   to 8% of the image (among squares of the same brightness, so that shape matters), trained with
   `main_segmentation.py` as experiments 4a (BCE) and 4b (Dice loss) on the same split; each
   validation image's Dice of both runs is plotted against its target's area, and the paired
   difference is given per third of the areas, with a 95% bootstrap interval and a verdict.

Writes small_target.png, small_target.csv and summary.md into a new folder under --out.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlab import quiet_tensorflow  # noqa: E402
from medlab.app.runs import main_guard, mark_complete, new_run_dir, save_config  # noqa: E402

# The generated set: image side, the range of target areas (share of the image), distractors.
AREAS = (0.005, 0.08)
DISTRACTORS = 2
# A prediction that misses the target puts this probability on its pixels.
MISSED = 0.05


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=120, help="generated pairs (default 120)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of 4a and 4b (default 30)")
    parser.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate (default 4e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set and the runs")
    parser.add_argument("--first", help="a BCE run's folder (with per_image.csv): skip training")
    parser.add_argument("--second", help="a Dice-loss run's folder, scored on the same images")
    parser.add_argument("--data-dir", help="the Image/ and Mask/ folder that --first scored")
    parser.add_argument("--out", default="results/bench", help="folder for the new run folder")
    return parser.parse_args(argv)


def small_target_set(folder, count, size, seed):
    """`count` gray images with one bright disc each (the target, its mask in Mask/) and
    `DISTRACTORS` bright squares, on a smooth uneven background with noise."""
    import cv2

    rng = np.random.default_rng(seed)
    for part in ("Image", "Mask"):
        (Path(folder) / part).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shade = cv2.GaussianBlur(rng.normal(0.45, 0.12, (size, size)), (0, 0), size / 8)
        image, mask = shade.copy(), np.zeros((size, size), np.uint8)
        area = np.exp(rng.uniform(*np.log(AREAS))) * size * size
        radius = max(1, int(round(np.sqrt(area / np.pi))))
        centre = tuple(int(c) for c in rng.integers(radius, size - radius, 2))
        cv2.circle(mask, centre, radius, 1, -1)
        image[mask > 0] += rng.uniform(0.2, 0.35)
        for _ in range(DISTRACTORS):
            half = max(1, int(radius * rng.uniform(0.6, 1.2)))
            x, y = (int(c) for c in rng.integers(half, size - half, 2))
            square = np.zeros_like(mask)
            cv2.rectangle(square, (x - half, y - half), (x + half, y + half), 1, -1)
            image[(square > 0) & (mask == 0)] += rng.uniform(0.2, 0.35)
        image = cv2.GaussianBlur(image, (0, 0), 0.7) + rng.normal(0, 0.04, image.shape)
        name = f"target_{i:03d}.png"
        cv2.imwrite(str(Path(folder) / "Image" / name), np.clip(image * 255, 0, 255).astype("u1"))
        cv2.imwrite(str(Path(folder) / "Mask" / name), mask * 255)
    return Path(folder)


def train_both(data_dir, args, out):
    """4a and 4b of main_segmentation.py on the set: their two run folders."""
    command = [
        sys.executable,
        str(ROOT / "main_segmentation.py"),
        "--data-dir",
        str(data_dir),
        "--experiments",
        "4a,4b",
        "--size",
        str(args.size),
        "--batch-size",
        "4",
        "--lr",
        str(args.lr),
        "--epochs",
        str(args.epochs),
        "--val-fraction",
        "0.5",
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return [next(Path(out).glob(f"*-{name}")) for name in ("4a", "4b")]


def target_areas(data_dir, names):
    """Each named image's target area: the share of its mask's pixels that are foreground."""
    import cv2

    areas = []
    for name in names:
        (path,) = [p for p in (Path(data_dir) / "Mask").iterdir() if p.stem == Path(name).stem]
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        areas.append(float((mask > 127).mean()))
    return np.array(areas)


def charged_losses(areas, size=64):
    """For each target area: (BCE, Dice loss) of a prediction that is right on the background
    but gives the target's pixels only `MISSED`, minus the loss of the right mask."""
    import unet

    rows = []
    for area in areas:
        truth = np.zeros((1, size, size, 1), "float32")
        truth.reshape(-1)[: max(1, int(round(area * size * size)))] = 1
        missed = truth * MISSED
        rows.append(
            [
                float(loss(truth, missed)) - float(loss(truth, truth))
                for loss in (unet.LOSSES["bce"], unet.LOSSES["dice"])
            ]
        )
    return np.array(rows)


def by_area(first, second, areas, seed):
    """Paired difference (first - second) of Dice per third of the target areas, and overall."""
    from medlab.app.comparisons import compare_runs

    thirds = np.array_split(np.argsort(areas, kind="stable"), 3)
    groups = [np.isin(np.arange(areas.size), third) for third in thirds]
    rows = []
    for label, chosen in [
        *((f"{areas[g].min():.1%} to {areas[g].max():.1%}", g) for g in groups),
        ("all", np.ones_like(areas, bool)),
    ]:
        scores = {
            run: {"image": np.flatnonzero(chosen), "dice": values[chosen]}
            for run, values in (("BCE", first), ("Dice loss", second))
        }
        results, _ = compare_runs(
            [("BCE", "Dice loss", label)], scores, [("dice", "Dice", True)], seed
        )
        result = results[0]["metrics"]["dice"]
        rows.append(
            {
                "target area": label,
                "images": int(chosen.sum()),
                "BCE Dice": f"{first[chosen].mean():.3f}",
                "Dice-loss Dice": f"{second[chosen].mean():.3f}",
                "BCE - Dice loss": f"{result['difference']:+.3f} "
                f"[{result['ci'][0]:+.3f}, {result['ci'][1]:+.3f}]",
                "verdict": result["verdict"],
            }
        )
    return rows


def collapse_warnings(runs):
    """A sentence for each run whose own check found it collapsed (its metrics.json)."""
    import json

    warnings = []
    for run in runs:
        path = Path(run) / "metrics.json"
        kind = json.loads(path.read_text()).get("collapsed_to") if path.is_file() else None
        if kind:
            warnings.append(
                f"{Path(run).name} has not learnt: it predicts the {kind} for every validation "
                "image, so its Dice of 0 means no target found, not a worse outline"
            )
    return warnings


def plot(path, areas, first, second, charged_at, charged, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(charged_at * 100, charged[:, 0], label="BCE")
    left.plot(charged_at * 100, charged[:, 1], label="Dice loss")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="target area (% of the image)",
        ylabel=f"loss of a mask that misses the target\n(p={MISSED} on it) minus the right mask's",
        title="what each loss charges for missing the target",
    )
    right.scatter(areas * 100, first, s=14, label="4a: BCE")
    right.scatter(areas * 100, second, s=14, marker="x", label="4b: Dice loss")
    right.set(
        xscale="log",
        xlabel="target area (% of the image)",
        ylabel="validation Dice per image",
        ylim=(-0.03, 1.03),
        xticks=[v for v in (0.5, 1, 2, 5, 10, 20) if areas.min() * 50 <= v <= areas.max() * 200],
        title=title,
    )
    for ax in (left, right):
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_arguments(argv)
    given = [args.first, args.second, args.data_dir]
    if any(given) and not all(given):
        sys.exit("error: --first, --second and --data-dir go together; give all three or none")
    quiet_tensorflow()
    from bench.compare_segmentation_scores import read_scores
    from medlab.app.report import Report, markdown_table
    from medlab.plots import write_csv

    if args.first:  # checked before any folder is made
        data_dir, runs = Path(args.data_dir), [Path(args.first), Path(args.second)]
        title = f"{runs[0].name} vs {runs[1].name}"
        for run in runs:
            read_scores(run)
    out = new_run_dir(args.out, "small-target")
    save_config(out, vars(args))
    if not args.first:
        data_dir = small_target_set(tempfile.mkdtemp(), args.pairs, args.size, args.seed)
        runs = train_both(data_dir, args, out / "runs")
        title = f"generated set: {args.pairs} pairs, {args.size} px, {args.epochs} epochs"
    first, second = (read_scores(run) for run in runs)
    names = sorted(first)
    dice = [np.array([scores[n]["dice"] for n in names]) for scores in (first, second)]
    areas = target_areas(data_dir, names)
    charged_at = np.geomspace(0.002, 0.5, 30)
    charged = charged_losses(charged_at, args.size)
    plot(out / "small_target.png", areas, *dice, charged_at, charged, title)
    write_csv(
        out / "small_target.csv",
        [
            {"image": n, "target_area": a, "dice_bce": f, "dice_dice_loss": s}
            for n, a, f, s in zip(names, areas, *dice)
        ],
        ["image", "target_area", "dice_bce", "dice_dice_loss"],
    )
    rows = by_area(*dice, areas, args.seed)
    report = Report(out, "Which loss for a small target")
    report.text(f"Runs: `{runs[0]}` (BCE) and `{runs[1]}` (Dice loss); {title}.")
    for warning in collapse_warnings(runs):
        report.bold(warning)
        print(warning)
    report.table(rows, list(rows[0]))
    report.figure(out / "small_target.png", "small target")
    report.write()
    print(markdown_table(rows, list(rows[0])))
    mark_complete(out)
    print(f"summary.md, small_target.png and small_target.csv: {out}")


if __name__ == "__main__":
    main_guard(main)()
