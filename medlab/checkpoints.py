"""Crash-safe training: a checkpoint after every epoch that a `kill -9` at any moment cannot damage.

The folder `run_dir/backup/` holds
  epoch-0007.npz  every variable of the model (its random generators' state included) and of its
                  optimizer after epoch 7, in the order Keras lists them, with their paths
  epoch-0005.npz  the same for the best epoch so far (by the monitored validation metric), kept
  state.json      the commit record: last complete epoch, the files above with their SHA-256, the
                  history rows, the best epoch and value and the training seconds so far
An epoch's file is written first, then `state.json` is replaced in one step: until that rename the
previous state and its files stand, so a resume always finds one complete, consistent epoch. Files
that no state names (a kill between the two steps) are deleted at the next commit. `history.csv`
in the run folder is rewritten from the state after each commit; `best.keras` is written from the
best epoch's file when training ends (`write_best`). The variables are written with NumPy rather
than `model.save_weights`, whose walk over Keras' objects costs about 0.3 s a call even for a
small model (a synthetic-demo epoch of base 8 takes 1-2 s). Checkpoints of earlier versions
(`.weights.h5`, `.keras`) still resume. A run that trains several models names each
(`name="transfer"`: `backup/transfer/` and `history_transfer.csv`); without a `monitor` no best
model is kept.

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
import numpy as np

from medlab import distribute
from medlab.atomic import fingerprint, matches, replacing, save_model_atomic, write_json
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
            # Built first, or the saved Adam moments have no variables to go to.
            model.optimizer.build(model.trainable_variables)
            load_variables(model, self.folder, state["weights"])
            # Keras weight files (before .npz) leave the random state of dropout out.
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
            "weights": f"epoch-{epoch + 1:04d}.npz",
            "rows": self.state["rows"] + [{"epoch": epoch, **logs}],
            "seconds": self.seconds(),
        }
        state.pop("seed_states", None)  # in the .npz now
        with replacing(self.folder / state["weights"]) as temp:
            save_variables(self.model, temp)
            crash_point("checkpoint-write")
        state["fingerprints"] = {state["weights"]: fingerprint(self.folder / state["weights"])}
        value = logs.get(self.monitor) if self.monitor else None
        best = self.state["best"]
        if (
            value is not None
            and math.isfinite(value)
            and (best is None or self.sign * (value - best["value"]) > 0)
        ):
            state["best"] = {"epoch": epoch + 1, "value": value, "file": state["weights"]}
        best = state["best"] and state["best"]["file"]
        if best:  # a best model of an earlier epoch keeps its own fingerprint
            old = self.state.get("fingerprints", {}).get(best)
            state["fingerprints"][best] = old or fingerprint(self.folder / best)
        crash_point("before-commit")
        write_json(self.folder / STATE, state)  # the commit
        self.state = state
        self.started = time.perf_counter()  # the seconds up to now are in the state
        self.publish()

    def write_best(self, model):
        """`best.keras` in the run folder: `model` with the best epoch's variables, saved; `model`
        then gets its own back. Nothing without a monitored metric or a finite best value."""
        best = self.state["best"]
        if best is None:
            return
        own = [distribute.host_value(v) for v in training_variables(model)]
        with distribute.model_scope(model):
            load_variables(model, self.folder, best["file"])
            save_model_atomic(model, self.run_dir / "best.keras")
            for variable, value in zip(training_variables(model), own):
                variable.assign(value)

    def seconds(self):
        """Training seconds of all runs of this experiment, this one up to now included."""
        return self.state["seconds"] + time.perf_counter() - self.started

    def publish(self):
        """history.csv from the committed state; files no state names are removed."""
        rows = self.state["rows"]
        columns = ["epoch", *sorted({key for row in rows for key in row} - {"epoch"})]
        write_csv(self.history, rows, columns)
        best = self.state["best"]
        keep = {STATE, self.state["weights"], best and best["file"]}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink()


def check_free_disk(folder, model):
    """Refuse to write an epoch's files on a disk without room for them: a write that fails half way
    can crash the process outright (HDF5, in Keras' saving of best.keras), so the check comes
    first. Room for the variables with Adam's two moments, the same again for best.keras and the
    final model at the end, and a margin for the small files."""
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


def training_variables(model):
    """Every variable a resumed run needs, in Keras' own order: the model's (weights, batch-norm
    statistics, the random generators of dropout) and the optimizer's (step, moments)."""
    return [*model.variables, *model.optimizer.variables]


def save_variables(model, path):
    """Write `training_variables(model)` to `path` (.npz), each under its index, with their paths
    (for a reader: they are matched by position and shape)."""
    variables = training_variables(model)
    arrays = {f"v{i}": distribute.host_value(v) for i, v in enumerate(variables)}
    with open(path, "wb") as handle:
        np.savez(handle, paths=np.array([v.path for v in variables]), **arrays)


def load_variables(model, folder, name):
    """Assign the variables saved in `folder / name` to `model` (built, optimizer built); a file of
    another model, or one that does not read, is a damaged checkpoint (`UserError`)."""
    path = Path(folder) / name
    if not name.endswith(".npz"):  # a checkpoint of an earlier version: .weights.h5 or .keras
        try:
            model.load_weights(path)
        except Exception as error:  # h5py and Keras raise many types for a damaged file
            raise damaged(folder, f"{name}: {first_line(error)}") from None
        return
    variables = training_variables(model)
    try:
        with np.load(path, allow_pickle=False) as saved:
            values = [saved[f"v{i}"] for i in range(len(saved["paths"]))]
    except Exception as error:  # zipfile, NumPy and the OS raise many types for a damaged file
        raise damaged(folder, f"{name}: {first_line(error)}") from None
    # By position, as Keras loads weights: a model built twice in one process has other names.
    if [tuple(v.shape) for v in variables] != [value.shape for value in values]:
        raise damaged(folder, f"{name} holds the variables of another model")
    for variable, value in zip(variables, values):
        variable.assign(value)


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
        build_training_state(model, train_data)
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=epochs,
            initial_epoch=done,
            callbacks=[checkpoint, *callbacks],
            shuffle=False,  # the dataset shuffles itself
            **{"verbose": 1 if sys.stdout.isatty() else 2, **fit_options},
        )
    checkpoint.write_best(model)
    return checkpoint.seconds()


def build_training_state(model, train_data):
    """Create the optimizer's and the metrics' variables before `fit` traces the training step.

    Without a distribution strategy, Keras on TensorFlow creates them inside the first trace, and
    TensorFlow then traces the step a second time without them: 4 to 8 s more per model on 2 CPU
    cores, paid by every experiment (bench/demo_segmentation.py). Keras does this build itself
    under a strategy and on JAX; its method is private, so a Keras without it just traces twice.
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    deferred = getattr(model, "_distribute_strategy", "unknown") is None
    if keras.backend.backend() == "tensorflow" and deferred and symbolic_build:
        symbolic_build(data_batch=train_data.element_spec)
