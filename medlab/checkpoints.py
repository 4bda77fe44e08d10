"""Crash-safe training: a checkpoint after every epoch that a `kill -9` at any moment cannot damage.

The folder `run_dir/backup/` holds
  epoch-0007.weights.h5  the weights and the optimizer's variables after epoch 7
  best-0005.keras        the model of the best epoch so far (by the monitored validation metric)
  state.json             the commit record: last complete epoch, the files above, the history rows,
                         the best value, the training seconds so far and the state of the model's
                         random generators (dropout), which weight files leave out
An epoch's files are written first, then `state.json` is replaced in one step: until that rename the
previous state and its files stand, so a resume always finds one complete, consistent epoch. Files
that no state names (a kill between the two steps) are deleted at the next commit. `history.csv`
and `best.keras` in the run folder are published copies, rewritten from the state after each commit.
A run that trains several models names each (`name="transfer"`: `backup/transfer/` and
`history_transfer.csv`); without a `monitor` no best model is kept.

An epoch whose training loss is NaN or infinite is not committed: training stops there with a
`UserError` that names the learning-rate flag to lower, and the epochs before it stay committed.
"""

import json
import math
import shutil
import sys
import time
from pathlib import Path

import keras

from medlab import distribute
from medlab.atomic import copy_atomic, fingerprint, matches, replacing, write_json
from medlab.errors import UserError, first_line
from medlab.faults import crash_point
from medlab.plots import write_csv

STATE = "state.json"


class EpochCheckpoint(keras.callbacks.Callback):
    """Commit the model, the optimizer and the history after every epoch; `restore` resumes."""

    def __init__(self, run_dir, monitor, mode="max", name=None, lr_flag="--lr"):
        super().__init__()
        self.run_dir, self.folder = Path(run_dir), Path(run_dir) / "backup" / (name or "")
        self.history = self.run_dir / (f"history_{name}.csv" if name else "history.csv")
        self.monitor, self.sign = monitor, 1 if mode == "max" else -1
        self.lr_flag = lr_flag
        self.label = self.run_dir.name + (f" ({name})" if name else "")
        self.state = {"epoch": 0, "weights": None, "rows": [], "best": None, "seconds": 0.0}
        self.started = time.perf_counter()

    def restore(self, model):
        """Load the last committed epoch into `model` (compiled); returns the epochs done."""
        state = read_state(self.folder)
        if state is None:
            return 0
        with distribute.model_scope(model):
            # Built first, or Keras skips the saved Adam moments and the resumed run starts cold.
            model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(self.folder / state["weights"])
            except Exception as error:  # h5py and Keras raise many types for a damaged file
                raise damaged(self.folder, f"{state['weights']}: {first_line(error)}") from None
            # Keras leaves the random state of dropout out of weight files: restored from here.
            for variable, value in zip(seed_states(model), state.get("seed_states", [])):
                variable.assign(value)
        self.state = state
        self.publish()
        return state["epoch"]

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        crash_point("batch")

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if not math.isfinite(logs.get("loss", 0.0)):
            raise UserError(
                f"the training loss became {logs['loss']} in epoch {epoch + 1}, so training "
                f"stopped; start a new run with a lower {self.lr_flag} (a third, say) or check "
                f"the data: --resume would diverge again, and a resumed run keeps its "
                f"{self.lr_flag}. {self.run_dir} keeps the {self.state['epoch']} complete "
                "epoch(s) before it"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        check_free_disk(self.folder, self.model)
        state = {
            **self.state,
            "epoch": epoch + 1,
            "weights": f"epoch-{epoch + 1:04d}.weights.h5",
            "rows": self.state["rows"] + [{"epoch": epoch, **logs}],
            "seed_states": [v.numpy().tolist() for v in seed_states(self.model)],
            "seconds": self.seconds(),
        }
        with replacing(self.folder / state["weights"]) as temp:
            self.model.save_weights(temp)
            crash_point("checkpoint-write")
        state["fingerprints"] = {state["weights"]: fingerprint(self.folder / state["weights"])}
        value = logs.get(self.monitor) if self.monitor else None
        best = self.state["best"]
        if (
            value is not None
            and math.isfinite(value)
            and (best is None or self.sign * (value - best["value"]) > 0)
        ):
            state["best"] = {
                "epoch": epoch + 1,
                "value": value,
                "file": f"best-{epoch + 1:04d}.keras",
            }
            with replacing(self.folder / state["best"]["file"]) as temp:
                self.model.save(temp)
        best = state["best"] and state["best"]["file"]
        if best:  # a best model of an earlier epoch keeps its own fingerprint
            old = self.state.get("fingerprints", {}).get(best)
            state["fingerprints"][best] = old or fingerprint(self.folder / best)
        crash_point("before-commit")
        write_json(self.folder / STATE, state)  # the commit
        self.state = state
        self.started = time.perf_counter()  # the seconds up to now are in the state
        self.publish()

    def seconds(self):
        """Training seconds of all runs of this experiment, this one up to now included."""
        return self.state["seconds"] + time.perf_counter() - self.started

    def publish(self):
        """history.csv and best.keras from the committed state; files no state names are removed."""
        rows = self.state["rows"]
        columns = ["epoch", *sorted({key for row in rows for key in row} - {"epoch"})]
        write_csv(self.history, rows, columns)
        best = self.state["best"]
        if best is not None:
            copy_atomic(self.folder / best["file"], self.run_dir / "best.keras")
        keep = {STATE, self.state["weights"], best and best["file"]}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink()


def check_free_disk(folder, model):
    """Refuse to write an epoch's files on a disk without room for them: HDF5 (h5py) can crash the
    process outright when a write fails, so the check comes before it. Room for the weights with
    Adam's two moments, a best model of the same size, and a margin for the small files."""
    needed = 2 * 3 * 4 * model.count_params() + FREE_MARGIN_BYTES
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed:
        raise UserError(
            f"the disk is full: {folder} has {free / 2**20:.1f} MB free, and a checkpoint needs "
            f"about {needed / 2**20:.1f} MB; free space or pass --out on a disk with room. The "
            f"epochs committed so far are kept"
        )


# Room kept for state.json, history.csv and the like.
FREE_MARGIN_BYTES = 8 << 20


def seed_states(model):
    """The state variables of the model's random generators (dropout), in a fixed order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def read_state(folder):
    """The committed state in `folder`, None when there is none, `UserError` when it is damaged."""
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        recorded = state.get("fingerprints", {})
        missing = [
            name
            for name in (state["weights"], (state["best"] or {}).get("file"))
            if name and not matches(Path(folder) / name, recorded.get(name))
        ]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        missing = [STATE]
    if missing:
        raise damaged(folder, f"{', '.join(missing)} missing, truncated or altered")
    return state


def damaged(folder, what):
    return UserError(
        f"the checkpoint in {folder} is damaged ({what}); delete that folder to train this "
        "experiment again from the start"
    )


def fit_resumable(model, train_data, val_data, epochs, checkpoint, callbacks=(), **fit_options):
    """`model.fit` for `epochs` epochs from the last epoch `checkpoint` committed (0 for a new run),
    committing each epoch; returns the training seconds over every run of it.

    `train_data` must be a `tf.data` pipeline that reshuffles (and draws augmentation seeds) anew
    on each pass: the passes already done are replayed, so the resumed epochs see batches drawn
    as an uninterrupted run's are. Keras may start a pass ahead of the epoch that uses it, so the
    replay is not always bit-exact: a resumed run ends within the seed noise of an uninterrupted
    one. (A repeated dataset with `steps_per_epoch` is exact on one device, but over several
    replicas it splits the last, partial batch otherwise than one device does.)
    `fit_options` go to `fit` (class_weight, verbose).
    """
    done = checkpoint.restore(model)
    if done:
        print(
            f"resuming {checkpoint.label} after epoch {done} of {epochs}: weights, optimizer "
            f"state and {done} history rows restored from {checkpoint.folder}"
        )
    if done < epochs:
        for _ in range(done):  # each pass moves the shuffling and augmentation seeds on
            iter(train_data)
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=epochs,
            initial_epoch=done,
            callbacks=[checkpoint, *callbacks],
            shuffle=False,  # the dataset shuffles itself
            **{"verbose": 1 if sys.stdout.isatty() else 2, **fit_options},
        )
    return checkpoint.seconds()
