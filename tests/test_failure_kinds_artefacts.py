"""Kind 3 of the failures: files the project wrote and reads back. Every file a real epoch
checkpoint and a real feature cache leave behind (found by listing what they wrote, so a new file
is covered without being listed) is truncated and bit-flipped: a damaged cache is rebuilt with a
note; anything else the resume reads is refused in one line naming its folder and what to do."""

import keras
import numpy as np
import pytest

from medlab.checkpoints import EpochCheckpoint, fit_resumable
from medlab.classification import transfer
from medlab.errors import UserError


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0x10  # in the data, past every header
    path.write_bytes(bytes(data))


DAMAGES = {"truncated": truncate, "bit-flipped": flip_bit}


def tiny_model():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def checkpointed_run(run_dir):
    """A run folder after two committed epochs; returns the files its checkpoint wrote."""
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 4), np.float32), rng.integers(0, 2, (16, 1)).astype(np.float32)
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(16, seed=0).batch(8)
    keras.utils.set_random_seed(0)
    # The best epoch by the highest training loss is the first (the loss falls), so the
    # checkpoint keeps two epochs' variables: the last and the best.
    checkpoint = EpochCheckpoint(run_dir, "loss", mode="max")
    fit_resumable(tiny_model(), data, data, 2, checkpoint, verbose=0)
    return sorted(p for p in (run_dir / "backup").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, checkpointed_run(run_dir)


def checkpoint_cases():
    return [(index, damage) for index in range(3) for damage in DAMAGES]


@pytest.mark.parametrize("index, damage", checkpoint_cases())
def test_every_checkpoint_file_damaged_is_one_line(pristine, tmp_path, index, damage):
    import shutil

    source, files = pristine
    assert len(files) == 3, files  # state.json, the last epoch's and the best epoch's variables
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    victim = run_dir / files[index].relative_to(source)
    DAMAGES[damage](victim)
    with pytest.raises(UserError) as refused:
        EpochCheckpoint(run_dir, "val_accuracy").restore(tiny_model())
    message = str(refused.value)
    assert "the checkpoint in" in message and "is damaged" in message, message
    assert "delete that folder" in message and "\n" not in message


def test_an_intact_checkpoint_restores(pristine, tmp_path):
    import shutil

    source, _ = pristine
    shutil.copytree(source, tmp_path / "run")
    assert EpochCheckpoint(tmp_path / "run", "val_accuracy").restore(tiny_model()) == 2


class Backbone:
    """A stand-in backbone: the features of an image are its mean, so a rebuild is checkable."""

    def predict_on_batch(self, images):
        return np.asarray(images).mean(axis=(1, 2))


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_feature_cache_is_rebuilt_with_a_note(tmp_path, damage, capsys, monkeypatch):
    import cv2

    monkeypatch.setattr(transfer, "to_backbone_input", lambda images, preprocess: images)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"x{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((16, 16, 3), 40 * i, np.uint8))
    caches = tmp_path / "cache"
    args = (Backbone(), paths, 16, "caffe", caches, "test")
    first, hit = transfer.cached_features(*args)
    assert not hit
    written = list(caches.iterdir())
    assert len(written) == 1
    DAMAGES[damage](written[0])
    capsys.readouterr()
    again, hit = transfer.cached_features(*args)
    assert not hit and np.array_equal(again, first)
    assert "the feature cache" in capsys.readouterr().out
    assert transfer.cached_features(*args)[1]  # rebuilt, so the next run hits it


def another_value(value):
    """A different value of the same JSON type: what a flipped digit or a hand edit leaves."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return list(reversed(value))
    return value + "x"


def test_every_sidecar_value_altered_is_one_line(tmp_path):
    import json

    from medlab.app import sidecars

    settings = {"input_size": 64, "channels": 1, "input_scale": 255.0, "class_names": ["A", "B"]}
    settings.update(positive_class="B", postprocess=True, tta=False, made_by="cam_vgg16.py")
    assert set(settings) == set(sidecars.KEYS)  # every key the project writes is covered
    model = tmp_path / "model.keras"
    sidecars.write_sidecar(model, **settings)
    pristine = sidecars.sidecar_path(model).read_text()
    assert sidecars.read_sidecar(model, "cam_vgg16.py")["channels"] == 1
    for key in settings:
        altered = json.loads(pristine)
        altered[key] = another_value(altered[key])
        sidecars.sidecar_path(model).write_text(json.dumps(altered))
        with pytest.raises(UserError, match=r"do not match their sha256 .*cam_vgg16.py"):
            sidecars.read_sidecar(model, "cam_vgg16.py")
