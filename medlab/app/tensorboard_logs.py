"""TensorBoard logs for every run of every task, so `tensorboard --logdir results` compares them.

Each trained model gets a log folder inside its run folder with the per-epoch scalars (Keras'
`TensorBoard` callback: `train/` and `validation/`) and, once the run is scored, its parameters and
final metrics for the HParams dashboard. Only plain values (numbers, strings, booleans) are logged
as hyperparameters; lists and None are written as text so that every run shows every column.
"""

from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

LOG_FOLDER = "tensorboard"


def log_dir_for(run_dir, model_name=None):
    """`run_dir/tensorboard`, or its `<model_name>` subfolder when a run trains several models."""
    folder = Path(run_dir) / LOG_FOLDER
    return folder / model_name if model_name else folder


def epoch_logger(log_dir):
    """A Keras callback that writes the epoch's losses and metrics (no graph, no profiling)."""
    return keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)


def hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_hparams(log_dir, parameters, final_metrics, trial_name):
    """Record a run's parameters and final metrics (numbers only) for the HParams dashboard."""
    metrics = {
        k: float(v)
        for k, v in final_metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    }
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams(
            {k: hparam_value(v) for k, v in parameters.items()}, trial_id=trial_name
        )
        for name, value in metrics.items():
            tf.summary.scalar(f"final/{name}", value, step=0)
    writer.close()
