"""medlab.checkpoints.fit_resumable: what it adds to `model.fit` besides the commits (those are
tested through the scripts in test_reliability.py and the crash tests)."""

import keras
import numpy as np
import pytest


@pytest.mark.parametrize("resumed", [False, True])
def test_the_training_step_is_traced_once(tmp_path, resumed):
    """The optimizer's and metrics' variables exist before the first trace, so TensorFlow does not
    trace the step a second time (seconds per model, paid by every experiment)."""
    import tensorflow as tf

    from medlab.checkpoints import EpochCheckpoint, fit_resumable

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the second trace is TensorFlow's")

    def fresh_model():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=["accuracy"])
        traces = []
        step = model.train_step
        model.train_step = lambda data: traces.append(1) or step(data)
        return model, traces

    rng = np.random.default_rng(0)
    pairs = (rng.random((16, 4), np.float32), (rng.random((16, 1)) > 0.5).astype(np.float32))
    data = tf.data.Dataset.from_tensor_slices(pairs).batch(4)
    if resumed:  # the restored run builds its optimizer to load the moments: still one trace
        fit_resumable(fresh_model()[0], data, data, 1, EpochCheckpoint(tmp_path, None), verbose=0)
    model, traces = fresh_model()
    fit_resumable(model, data, data, 2, EpochCheckpoint(tmp_path, None), verbose=0)
    assert len(traces) == 1
    assert len(model.optimizer.variables) > 1  # Adam's moments were created and trained


def test_best_keras_holds_the_best_epoch_and_the_model_keeps_its_last(tmp_path):
    """The best epoch's variables become best.keras when training ends, and the model in memory
    (scored as the final model) keeps the last epoch's."""
    import tensorflow as tf

    from medlab.checkpoints import EpochCheckpoint, fit_resumable

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            (logs["loss"], [w.copy() for w in model.get_weights()])
        )
    )
    rng = np.random.default_rng(1)
    x = rng.random((32, 4), np.float32)
    labels = (x.sum(1, keepdims=True) > 2).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    # "best" is the highest training loss: an early epoch, since the loss falls.
    checkpoint = EpochCheckpoint(tmp_path, monitor="loss", mode="max")
    fit_resumable(model, data, data, 4, checkpoint, callbacks=[record], verbose=0)
    best_epoch = int(np.argmax([loss for loss, _ in seen]))
    assert best_epoch < 3  # otherwise the test could not tell best from last
    best = keras.models.load_model(tmp_path / "best.keras")
    for saved, expected in zip(best.get_weights(), seen[best_epoch][1]):
        np.testing.assert_array_equal(saved, expected)
    for kept, expected in zip(model.get_weights(), seen[-1][1]):
        np.testing.assert_array_equal(kept, expected)


def test_a_checkpoint_of_the_earlier_format_resumes(tmp_path):
    """A run checkpointed before the .npz files (Keras weights, a whole best model, the dropout
    state in state.json) resumes with its weights and publishes its best model."""
    import json

    import tensorflow as tf

    from medlab.atomic import fingerprint
    from medlab.checkpoints import EpochCheckpoint, fit_resumable

    def compiled():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
        return model

    x = np.random.default_rng(2).random((8, 4), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, :1] > 0.5).astype("f"))).batch(4)
    old = compiled()
    old.fit(data, epochs=1, verbose=0)
    backup = tmp_path / "backup"
    backup.mkdir()
    old.save_weights(backup / "epoch-0001.weights.h5")
    old.save(backup / "best-0001.keras")
    files = ("epoch-0001.weights.h5", "best-0001.keras")
    state = {
        "epoch": 1,
        "weights": files[0],
        "rows": [{"epoch": 0, "loss": 0.7, "val_loss": 0.7}],
        "best": {"epoch": 1, "value": 0.0, "file": files[1]},  # a val_loss no epoch beats
        "seconds": 1.0,
        "seed_states": [],
        "fingerprints": {name: fingerprint(backup / name) for name in files},
    }
    (backup / "state.json").write_text(json.dumps(state))
    resumed = compiled()
    checkpoint = EpochCheckpoint(tmp_path, monitor="val_loss", mode="min")
    assert checkpoint.restore(resumed) == 1
    for restored, saved in zip(resumed.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(restored, saved)
    checkpoint = EpochCheckpoint(tmp_path, monitor="val_loss", mode="min")
    fit_resumable(compiled(), data, data, 2, checkpoint, verbose=0)
    best = keras.models.load_model(tmp_path / "best.keras")
    for published, saved in zip(best.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(published, saved)
    # epoch 2 in the new format, the best model of epoch 1 kept as it was
    assert sorted(p.name for p in backup.iterdir()) == [files[1], "epoch-0002.npz", "state.json"]
