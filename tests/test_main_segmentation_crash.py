"""Crash safety: main_segmentation.py killed with SIGKILL at the moments that used to lose work
(during an epoch, while a checkpoint is written, between model.keras and metrics.json), then
`--resume`d each time, ends as a complete run with the epochs and history rows it was asked for."""

import csv
import json
import os
import signal

from medlab.synthetic.xray import write_chest_xrays
from tests.conftest import run_script

EPOCHS = 2
TINY = [
    "--epochs",
    str(EPOCHS),
    *"--size 32 --depth 2 --base 2 --batch-size 4 --experiments 4a".split(),
]
# Each run is killed at one point; the next run resumes it. 8 training pairs = 2 batches an epoch.
CRASHES = [
    ("batch", 3),  # during epoch 2, after epoch 1 was committed
    ("checkpoint-write", 1),  # epoch 2's weights half written
    ("before-metrics", 1),
]  # model.keras and figures written, metrics.json not yet


def crashing(point, count, *args):
    os.environ["MEDLAB_CRASH_AT"] = f"{point}:{count}"
    try:
        return run_script("main_segmentation.py", *args)
    finally:
        del os.environ["MEDLAB_CRASH_AT"]


def history_epochs(run):
    with open(run / "history.csv", newline="") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


def test_sigkill_at_every_point_then_resume_finishes_the_run(tmp_path):
    write_chest_xrays(tmp_path / "X_ray", 10, 32, seed=3)
    out = tmp_path / "out"
    result = crashing(*CRASHES[0], "--data-dir", tmp_path / "X_ray", *TINY, "--out", out)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    (summary,) = out.glob("*-summary")
    (run,) = out.glob("*-4a")
    assert history_epochs(run) == [0] and (run / "INCOMPLETE.txt").is_file()
    assert not (run / "metrics.json").exists() and (summary / "INCOMPLETE.txt").is_file()
    for point, count in CRASHES[1:]:
        result = crashing(point, count, "--resume", summary)
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
        assert "resuming" in result.stdout and "Traceback" not in result.stderr, point
        assert not (run / "metrics.json").exists()
    assert (run / "model.keras").is_file()  # the last kill came after the model was saved
    result = run_script("main_segmentation.py", "--resume", summary)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"after epoch {EPOCHS} of {EPOCHS}" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and history_epochs(run) == list(range(EPOCHS))
    assert not list(out.rglob("INCOMPLETE.txt")) and not list(out.rglob("*.partial*"))
    assert not (run / "backup").exists() and (summary / "summary.md").is_file()
