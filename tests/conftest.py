"""Shared test set-up: scripts and `medlab` import as users run them (pyproject's pythonpath),
TensorFlow starts quietly, and the `script` fixture runs a root script; see tests/helpers.py."""

import pytest
from helpers import run_script

from medlab import quiet_tensorflow

quiet_tensorflow()  # as the scripts do


@pytest.fixture
def script():
    return run_script
