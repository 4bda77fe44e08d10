"""Does `kill -9` + `--resume` end where an uninterrupted run ends? (docs/errors.md)

    python bench/resume_fidelity.py cam_vgg16.py --size 64 --base 4 --epochs 8
    python bench/resume_fidelity.py transfer_vgg16.py --weights none --epochs 6

Everything after the script's name is that script's own flags (without --seed and --out). With
them, this trains four runs on the same data (the built-in demo set unless --data-dir is given):
  uninterrupted   seed S
  again           seed S once more: how far two identical runs already differ on this machine
  killed+resumed  seed S, killed with SIGKILL at a random moment inside a random epoch after the
                  second (from outside, as `kill -9` does), then `--resume`d to the end
  other seed      seed S+1: the training noise that a difference has to beat
and prints, for each run, its epochs in history and its final scores, then each run's largest
difference from the uninterrupted one. Timing lines in the scores are left out. Nothing is kept
unless --keep is given.
"""

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlab.plots import read_history  # noqa: E402

SKIPPED = ("second", "minute", "time")  # timings differ between any two runs


def run(script, flags, seed, out, wait=True):
    command = [sys.executable, str(ROOT / script), *flags, "--seed", str(seed), "--out", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait:
        finish(process)
    return process


def finish(process):
    _, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"error: a run failed (exit {process.returncode}):\n{stderr.decode()[-2000:]}")


def run_folder(out):
    (folder,) = [path for path in Path(out).iterdir() if path.is_dir()]
    return folder


def epochs_committed(out):
    """Epochs committed so far, from the published history files of the run under `out`."""
    histories = Path(out).glob("*/history*.csv")
    return sum(len(read_history(path).get("epoch", [])) for path in histories)


def killed_and_resumed(script, flags, seed, out, epochs, rng):
    """A run SIGKILLed inside a random epoch after the second, then resumed to the end."""
    kill_after = rng.randrange(2, epochs)  # committed epochs before the kill
    process = run(script, flags, seed, out, wait=False)
    commits = {}  # epochs committed -> when they were first seen
    while process.poll() is None:
        done = epochs_committed(out) if Path(out).exists() else 0
        commits.setdefault(done, time.monotonic())
        if done >= kill_after:
            epoch_seconds = commits[done] - commits.get(done - 1, commits[0])
            time.sleep(rng.uniform(0.2, 0.8) * epoch_seconds)  # into the next epoch
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.05)
    if process.returncode != -signal.SIGKILL:
        sys.exit("error: the run ended before it could be killed: ask for more --epochs")
    folder = run_folder(out)
    print(f"  killed after {epochs_committed(out)} committed epoch(s); resuming {folder.name}")
    resumed = subprocess.run(
        [sys.executable, str(ROOT / script), "--resume", str(folder)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if resumed.returncode != 0:
        sys.exit(f"error: the resume failed:\n{resumed.stderr.decode()[-2000:]}")


def scores(folder):
    """The final row of each history file and the top-level numbers of metrics.json."""
    found = {}
    for path in sorted(folder.glob("history*.csv")):
        history = read_history(path)
        found[f"{path.stem}.epochs"] = len(history["epoch"])
        found.update({f"{path.stem}.{k}": v[-1] for k, v in history.items() if k != "epoch"})
    for key, value in json.loads((folder / "metrics.json").read_text()).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"metrics.{key}"] = float(value)
    return {k: v for k, v in found.items() if not any(word in k for word in SKIPPED)}


def report(table):
    names = list(table)
    keys = [key for key in table[names[0]] if all(key in table[name] for name in names)]
    width = max(map(len, keys))
    print(f"\n{'score':<{width}} " + " ".join(f"{name:>15}" for name in names))
    for key in keys:
        print(f"{key:<{width}} " + " ".join(f"{table[name][key]:>15.4f}" for name in names))
    reference = table[names[0]]
    print("\nlargest difference from the uninterrupted run, over the scores above:")
    for name in names[1:]:
        key = max(keys, key=lambda k: abs(table[name][k] - reference[k]))
        print(f"  {name:<15} {abs(table[name][key] - reference[key]):.4f} ({key})")
    resumed, other = table["killed+resumed"], table["other seed"]
    varying = [k for k in keys if other[k] != reference[k]]
    closer = sum(abs(resumed[k] - reference[k]) <= abs(other[k] - reference[k]) for k in varying)
    print(
        f"killed+resumed is at least as close to the uninterrupted run as the other seed in "
        f"{closer} of the {len(varying)} scores that the seed changes"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("script", choices=["cam_vgg16.py", "transfer_vgg16.py"])
    parser.add_argument("--seed", type=int, default=0, help="seed S of the runs (default 0)")
    parser.add_argument("--keep", help="keep the run folders under this folder")
    args, flags = parser.parse_known_args()
    epochs = int(flags[flags.index("--epochs") + 1]) if "--epochs" in flags else None
    if not epochs or epochs < 3:
        sys.exit("error: give the script's --epochs (3 or more)")
    rng = random.Random(args.seed)
    base = Path(args.keep or tempfile.mkdtemp(prefix="resume-fidelity-"))
    table = {}
    for name, seed in (("uninterrupted", args.seed), ("again", args.seed)):
        print(f"{name}: seed {seed}")
        run(args.script, flags, seed, base / name)
        table[name] = scores(run_folder(base / name))
    print(f"killed+resumed: seed {args.seed}")
    killed_and_resumed(args.script, flags, args.seed, base / "resumed", epochs, rng)
    table["killed+resumed"] = scores(run_folder(base / "resumed"))
    print(f"other seed: seed {args.seed + 1}")
    run(args.script, flags, args.seed + 1, base / "other")
    table["other seed"] = scores(run_folder(base / "other"))
    report(table)
    if not args.keep:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
