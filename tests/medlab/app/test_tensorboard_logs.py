"""TensorBoard logs: per-epoch scalars, each trained model's HParams session with its final scores,
the task's experiment (which columns the HParams table shows by default) and the Images tab."""

import json
from pathlib import Path

import keras
import numpy as np
from helpers import experiment_in, images_in, tensorboard_events
from tensorboard.plugins.hparams import api_pb2, metadata

from medlab.app.tensorboard_logs import (
    OverlayLogger,
    edge,
    epoch_logger,
    short_stamp,
    write_hparams,
    write_png,
)


def shown_by_default(experiment):
    """What TensorBoard's HParams table ticks: its server sorts the hparams, those marked
    `differs` first, then by name, and the page ticks the first 5 of them and of the metrics."""
    ordered = sorted(experiment.hparam_infos, key=lambda h: (not h.differs, h.name))
    return [h.name for h in ordered][:5], [m.name.tag for m in experiment.metric_infos][:5]


def test_epoch_scalars_go_to_train_and_validation(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 1), np.float32)
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0, callbacks=[epoch_logger(tmp_path)])
    train, validation = (tensorboard_events(tmp_path / d) for d in ("train", "validation"))
    assert train["epoch_loss"] == [0, 1, 2] and validation["epoch_loss"] == [0, 1, 2]


def test_sessions_and_one_experiment_per_task_with_the_answer_shown_first(tmp_path):
    seg, cam = tmp_path / "segmentation", tmp_path / "cam"
    for name, loss, dice in (("4a", "bce", 0.9), ("4b", "dice", 0.7)):
        parameters = {"experiment": name, "loss": loss, "lr": 1e-3, "seed": 1, "flip": True}
        metrics = {"val_dice": dice, "val_dice_std": 0.1, "collapsed": False, "epochs": 2}
        write_hparams("segmentation", seg, seg / f"s-{name}", name, parameters, metrics)
    write_hparams(
        "cam", cam, cam / "s-bone", "Bone", {"lr": 1e-5, "flip": "x"}, {"val_auc": 0.8, "n": "x"}
    )

    session = tensorboard_events(seg / "s-4a" / "tensorboard" / "validation")
    assert metadata.SESSION_START_INFO_TAG in session
    # numbers only, and no spreads: booleans, text and standard deviations are not columns
    assert [tag for tag in session if tag.startswith("final/")] == ["final/val_dice"]
    record = json.loads((seg / "s-4b" / "tensorboard" / "validation" / "hparams.json").read_text())
    assert record["name"] == "segmentation/s-4b" and record["hparams"]["model"] == "4b"
    assert sorted(p.name for p in seg.iterdir()) == ["s-4a", "s-4b"]  # nothing beside the runs

    # One experiment per task, in its latest session (no run of its own), over both tasks
    # (TensorBoard shows one per logdir); the earlier run's copy is gone.
    assert not list((seg / "s-4a").rglob("*hparams-experiment"))
    experiment = experiment_in(seg / "s-4b" / "tensorboard" / "validation")
    assert experiment == experiment_in(cam / "s-bone" / "tensorboard" / "validation")
    hparams, metrics = shown_by_default(experiment)
    # lr and flip do not differ within a task; lr fills the fifth column the table always ticks
    assert hparams == ["loss", "lr", "model", "run", "task"]
    assert metrics == ["final/val_dice", "final/val_auc"]
    infos = {h.name: h for h in experiment.hparam_infos}
    assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64
    # A column that mixes types is text, and its values keep their own types (the table hides
    # rows whose value its list of values lacks).
    assert infos["flip"].type == api_pb2.DATA_TYPE_STRING
    assert [v.WhichOneof("kind") for v in infos["flip"].domain_discrete.values] == [
        "string_value",
        "bool_value",
    ]
    types = {h.name: h.type for h in experiment.hparam_infos}
    assert "experiment" not in types  # it is the model column


def test_run_column_is_short_enough_to_read():
    assert short_stamp(Path("20261202-114959-4a/fold2")) == "12-02 11:49:59/fold2"
    assert short_stamp(Path("mine")) == "mine"


def test_images_of_the_overlays_every_few_epochs_and_of_a_saved_figure(tmp_path):
    images = np.random.default_rng(0).random((3, 16, 16, 1)).astype(np.float32)
    masks = np.zeros_like(images)
    masks[:, 4:12, 4:12] = 1
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(1, 1)])
    model.compile("sgd", "mse")
    logger = OverlayLogger(tmp_path, images, masks, epochs=5, every=2)
    model.fit(images, masks, epochs=5, verbose=0, callbacks=[logger])
    keras.utils.save_img(tmp_path / "grid.png", np.zeros((10, 20, 3)))
    write_png(tmp_path, "Grad-CAM grid", tmp_path / "grid.png", step=5)

    logged = images_in(tmp_path / "validation")
    overlays = logged["overlays: truth (green) vs prediction (red)"]
    assert overlays == [(2, 3), (4, 3), (5, 3)]  # every 2 epochs and after the last, 3 images
    assert logged["Grad-CAM grid"] == [(5, 1)]


def test_edge_is_the_outline_of_a_mask():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    outline = edge(mask)
    assert outline.sum() == 12 and not outline[2:4, 2:4].any()
