"""Shared code for the lab scripts: errors and run folders, image I/O, data folders,
synthetic demo data, plots and the VGG-style model. The scripts at the repository root
import from here so that no logic is written twice."""

import os
import sys


def quiet_tensorflow():
    """Import TensorFlow with its C++ start-up chatter silenced.

    On a machine without a GPU, TensorFlow's native code prints CUDA and absl messages straight to
    the stderr file descriptor before any Python setting applies; they look like errors and would
    bury the one-line messages this project promises. Set MEDLAB_TF_LOGS=1 to see them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("MEDLAB_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery is where CUDA complains
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
