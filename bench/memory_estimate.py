r"""Benchmark (not a test): the memory checks' estimates against the peaks they stand for.

`cam_vgg16.py` and `main_segmentation.py` refuse, before anything is built, a training whose
estimated memory exceeds the machine's (cam) or --memory-budget-gb (U-Net). This runs each for one
epoch at growing --size, every run in its own process, and prints the process's peak resident
memory next to the estimate. The smallest size is the baseline (TensorFlow, the libraries and the
data cost memory whatever the size); what a larger size adds to the peak is what the estimate
must cover: "covered" is the estimate divided by the measured growth, which should be 1 or more.

    python bench/memory_estimate.py                          # cam 128,256,512; U-Net 128,256,512
    python bench/memory_estimate.py --sizes 128,384,768 --scripts cam
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlab.app.segmentation.setup import (  # noqa: E402
    BYTES_PER_ACTIVATION,
    BYTES_PER_WEIGHT,
    unet_activations,
    unet_weights,
)
from medlab.classification import vgg  # noqa: E402
from medlab.synthetic.skin_bone import synthetic_class_set  # noqa: E402
from medlab.synthetic.xray import write_chest_xrays  # noqa: E402

BATCH, IMAGES = 8, 16


def cam_estimate(size):
    return vgg.training_gb(size, 1, 8, BATCH, False, "flatten", IMAGES)


def unet_estimate(size):
    values = unet_activations(size, 8, 4, False, 0.0)
    return (values * BATCH * BYTES_PER_ACTIVATION + unet_weights(8, 4) * BYTES_PER_WEIGHT) / 2**30


def peak_gb(command, folder):
    """The peak resident memory (GiB) of `command` run to its end in `folder`."""
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 2**20  # kilobytes on Linux


def commands(script, data, size, out):
    if script == "cam":
        return [
            *(sys.executable, str(ROOT / "cam_vgg16.py"), "--data-dir", str(data)),
            *f"--size {size} --epochs 1 --batch-size {BATCH} --grid-images 2".split(),
            *("--sanity-images", "2", "--out", str(out)),
        ]
    return [
        *(sys.executable, str(ROOT / "main_segmentation.py"), "--data-dir", str(data)),
        *f"--size {size} --epochs 1 --batch-size {BATCH} --experiments 4a".split(),
        *("--memory-budget-gb", "64", "--out", str(out)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--scripts", default="cam,unet")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    print("| script | --size | estimate GB | peak GB | growth over the smallest GB | covered |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = {
            "cam": synthetic_class_set(
                "bone", n_train=IMAGES * 3 // 4, n_val=IMAGES // 4, size=max(sizes), root=folder
            ),
            "unet": folder / "X_ray",
        }
        write_chest_xrays(data["unet"], IMAGES, max(sizes), seed=0)
        estimate = {"cam": cam_estimate, "unet": unet_estimate}
        for script in args.scripts.split(","):
            base = None
            for size in sizes:
                out = folder / f"out-{script}-{size}"
                peak = peak_gb(commands(script, data[script], size, out), folder)
                base = base or (peak, estimate[script](size))
                growth = peak - base[0]
                grown_estimate = estimate[script](size) - base[1]
                covered = f"{grown_estimate / growth:.2f}" if growth > 0.05 else "(baseline)"
                print(
                    f"| {script} | {size} | {estimate[script](size):.2f} | {peak:.2f} | "
                    f"{growth:.2f} | {covered} |"
                )


if __name__ == "__main__":
    main()
