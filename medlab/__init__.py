"""Shared code for the lab scripts, so that no logic is written twice: the application layer
(`medlab.app`: flags, parameter declarations, run folders, reports), two-class classification
(`medlab.classification`), the synthetic demo data (`medlab.synthetic`), image I/O, augmentation,
plots and training helpers. Importing `medlab` starts nothing; entry points call
`quiet_tensorflow()` before TensorFlow is first used."""

import os
import sys


def quiet_tensorflow():
    """Import TensorFlow with its C++ start-up chatter silenced.

    On a machine without a GPU, TensorFlow's native code prints CUDA and absl messages straight to
    the stderr file descriptor before any Python setting applies; they look like errors and would
    bury the one-line messages this project promises. Set MEDLAB_TF_LOGS=1 to see them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("MEDLAB_TF_LOGS") == "1":
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        # Device discovery is where CUDA complains.
        tf.config.list_physical_devices()
        tf.get_logger().addFilter(not_a_retracing_notice)  # once, however often it is called
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def not_a_retracing_notice(record):
    """False for TensorFlow's retracing warning: predicting on batches of another size (the
    overlays of a few images, a second experiment's model) traces again, as it should, and the
    warning reads like a fault."""
    return "tf.function retracing" not in record.getMessage()
