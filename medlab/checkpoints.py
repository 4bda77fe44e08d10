"""Crash-safe training: a checkpoint after every epoch that a `kill -9` at any moment cannot damage.

The folder `run_dir/backup/` holds
  epoch-0007.weights.h5  the weights and the optimizer's variables after epoch 7
  best-0005.keras        the model of the best epoch so far (by the monitored validation metric)
  state.json             the commit record: last complete epoch, the files above, the history rows,
                         the best value and the training seconds so far
An epoch's files are written first, then `state.json` is replaced in one step: until that rename the
previous state and its files stand, so a resume always finds one complete, consistent epoch. Files
that no state names (a kill between the two steps) are deleted at the next commit. `history.csv`
and `best.keras` in the run folder are published copies, rewritten from the state after each commit.
"""

import json
import math
import time
from pathlib import Path

import keras

from medlab.atomic import copy_atomic, replacing, write_json
from medlab.errors import UserError
from medlab.faults import crash_point
from medlab.plots import write_csv

STATE = "state.json"


class EpochCheckpoint(keras.callbacks.Callback):
    """Commit the model, the optimizer and the history after every epoch; `restore` resumes."""

    def __init__(self, run_dir, monitor, mode="max"):
        super().__init__()
        self.run_dir, self.folder = Path(run_dir), Path(run_dir) / "backup"
        self.monitor, self.sign = monitor, 1 if mode == "max" else -1
        self.state = {"epoch": 0, "weights": None, "rows": [], "best": None, "seconds": 0.0}
        self.started = time.perf_counter()

    def restore(self, model):
        """Load the last committed epoch into `model` (compiled); returns the epochs done."""
        state = read_state(self.folder)
        if state is None:
            return 0
        with model.distribute_strategy.scope():
            # Built first, or Keras skips the saved Adam moments and the resumed run starts cold.
            model.optimizer.build(model.trainable_variables)
            model.load_weights(self.folder / state["weights"])
        self.state = state
        self.publish()
        return state["epoch"]

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        crash_point("batch")

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.folder.mkdir(exist_ok=True)
        state = {
            **self.state,
            "epoch": epoch + 1,
            "weights": f"epoch-{epoch + 1:04d}.weights.h5",
            "rows": self.state["rows"] + [{"epoch": epoch, **logs}],
            "seconds": self.seconds(),
        }
        with replacing(self.folder / state["weights"]) as temp:
            self.model.save_weights(temp)
            crash_point("checkpoint-write")
        value = logs.get(self.monitor)
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
        write_csv(self.run_dir / "history.csv", rows, columns)
        best = self.state["best"]
        if best is not None:
            copy_atomic(self.folder / best["file"], self.run_dir / "best.keras")
        keep = {STATE, self.state["weights"], best and best["file"]}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink()


def read_state(folder):
    """The committed state in `folder`, None when there is none, `UserError` when it is damaged."""
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        missing = [
            name
            for name in (state["weights"], (state["best"] or {}).get("file"))
            if name and not (Path(folder) / name).is_file()
        ]
    except (ValueError, KeyError, TypeError):
        missing = [STATE]
    if missing:
        raise UserError(
            f"the checkpoint in {folder} is damaged ({', '.join(missing)} unreadable or "
            "missing); delete that folder to train this experiment again from the start"
        )
    return state
