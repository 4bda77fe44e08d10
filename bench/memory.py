"""Benchmark (not a test): peak resident memory of the segmentation run in each --cache mode.

Writes N synthetic 256x256 chest X-ray pairs to a temporary folder, then runs main_segmentation.py
once per mode, each in its own process, for one epoch of a tiny U-Net (base 2, depth 2: the input
pipeline, not the model, decides the memory), and prints each process's peak resident set size
with its training time. Target: streamed modes (none, disk) below 2 GB.

    python bench/memory.py [--pairs 2000] [--size 256] [--modes memory,disk,none]
                           [--memory-budget-gb 4]

The budget only matters to --cache disk (its shuffle buffer may fill a quarter of it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unet  # noqa: E402
from medlab.synthetic.xray import write_chest_xrays  # noqa: E402

TINY_UNET = [
    "--experiments",
    "4a",
    "--epochs",
    "1",
    "--base",
    "2",
    "--depth",
    "2",
    "--batch-size",
    "8",
]


def peak_memory_run(command):
    """Run `command` and return (exit code, peak resident memory in GiB, wall seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    _, status, usage = os.wait4(
        process.pid, 0
    )  # this child's own rusage; ru_maxrss is in KiB on Linux
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        print(process.stderr.read().decode()[-2000:], file=sys.stderr)
    return process.returncode, usage.ru_maxrss / 2**20, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--modes", default="memory,disk,none")
    parser.add_argument("--memory-budget-gb", default="4.0")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_chest_xrays(Path(tmp) / "X_ray", args.pairs, args.size, seed=0)
        for mode in args.modes.split(","):
            out = Path(tmp) / f"out-{mode}"
            code, peak_gb, wall = peak_memory_run(
                [
                    sys.executable,
                    str(ROOT / "main_segmentation.py"),
                    "--data-dir",
                    str(Path(tmp) / "X_ray"),
                    "--size",
                    str(args.size),
                    "--cache",
                    mode,
                    "--memory-budget-gb",
                    args.memory_budget_gb,
                    "--out",
                    str(out),
                    *TINY_UNET,
                ]
            )
            metrics = (
                json.loads(next(out.glob("*-4a/metrics.json")).read_text()) if code == 0 else {}
            )
            rows.append((mode, code, peak_gb, metrics.get("train_seconds", float("nan")), wall))
    decoded = unet.decoded_gb(args.pairs, args.size)
    print(
        f"\n{args.pairs} pairs at {args.size}x{args.size} ({decoded:.2f} GiB decoded as float32), "
        f"one epoch of a base-2 depth-2 U-Net, batch 8, memory budget {args.memory_budget_gb} GB, "
        f"{os.cpu_count()} CPU(s)"
    )
    print(f"{'--cache':8} {'peak RSS':>9} {'epoch+val':>10} {'whole run':>10}")
    for mode, code, peak_gb, train_seconds, wall in rows:
        status = "" if code == 0 else f"  (failed, exit {code})"
        print(f"{mode:8} {peak_gb:7.2f} GB {train_seconds:8.0f} s {wall:8.0f} s{status}")


if __name__ == "__main__":
    main()
