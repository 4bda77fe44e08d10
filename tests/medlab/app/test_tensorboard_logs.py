"""TensorBoard logs: per-epoch callback scalars, parameters and final metrics for HParams."""

import keras
import numpy as np
from helpers import tensorboard_events

from medlab.app.tensorboard_logs import epoch_logger, write_hparams


def test_epoch_scalars_and_hparams_are_written_where_tensorboard_reads_them(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 1), np.float32)
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0, callbacks=[epoch_logger(tmp_path)])
    write_hparams(
        tmp_path,
        {"lr": 0.1, "loss": "mse", "flip": True, "classes": ["a", "b"]},
        {"val_dice": 0.5, "collapsed": False, "note": "text", "bad": float("nan")},
        "trial",
    )

    train, validation, root = (
        tensorboard_events(tmp_path / d) for d in ("train", "validation", ".")
    )
    assert train["epoch_loss"] == [0, 1, 2] and validation["epoch_loss"] == [0, 1, 2]
    assert "_hparams_/session_start_info" in root  # the HParams dashboard's record of the run
    # numbers only: booleans, text and NaN are not metrics
    assert [tag for tag in root if tag.startswith("final/")] == ["final/val_dice"]
