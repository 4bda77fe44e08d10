"""Shared test set-up: run from the repo root so scripts and `medlab` import as users run them."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from medlab import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # as the scripts do


def run_script(script, *args, cwd=None, timeout=600):
    """Run a root-level script as a user would and return the completed process."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def script():
    return run_script


def tensorboard_events(log_dir):
    """{tag: [steps]} of the event files directly inside `log_dir` (not its subfolders)."""
    import tensorflow as tf

    tags = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags
