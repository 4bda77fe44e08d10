"""Shared test set-up: run from the repository root so scripts and `medlab` import as users run them."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import medlab  # noqa: E402,F401  (TensorFlow imported quietly, as in the scripts)


def run_script(script, *args, cwd=None, timeout=600):
    """Run a root-level script as a user would and return the completed process."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def script():
    return run_script
