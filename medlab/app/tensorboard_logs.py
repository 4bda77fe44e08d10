"""TensorBoard logs for every run of every task, so that `tensorboard --logdir results` opens on
the answer.

Layout, for a run folder `<root>/<stamp>-4a` of the task `segmentation` (`root` is `--out`):

    <stamp>-4a/tensorboard/train/        Keras' per-epoch scalars of the training images
    <stamp>-4a/tensorboard/validation/   ... of the validation images, the run's HParams session
                                         with its `final/*` scores (and `hparams.json`, its row),
                                         its images; in the task's latest run also the task's
                                         HParams experiment

So Scalars shows each training once, as Keras users know it (a `train` and a `validation` curve),
Images the figures, and HParams one row per trained model (trial `segmentation/<stamp>-4a`). The
experiment says which columns the HParams table shows by default (it ticks the first five hparams
marked as differing, in alphabetical order, and the first five metrics): the task, the model or
experiment, when the run was made, the settings that differ between a task's runs, then the
final validation scores. TensorBoard shows one experiment per `--logdir`, so when several tasks
share a tree (`results/{segmentation,cam,transfer}`) each task's experiment covers all of them.
"""

import json
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import summary_v2 as hparams_summary

from medlab.atomic import write_text_atomic

LOG_FOLDER = "tensorboard"
SESSION_FOLDER = "validation"  # Keras' validation run: the final scores belong with its curves
RECORD = "hparams.json"  # a session's row, to rebuild the task's experiment from
# Where the sessions of a task's output folder are: a run, a model of a run, a fold of a run.
RECORD_PATTERNS = [
    f"*/{LOG_FOLDER}/validation/{RECORD}",
    f"*/{LOG_FOLDER}/*/validation/{RECORD}",
    f"*/*/{LOG_FOLDER}/validation/{RECORD}",
]
EXPERIMENT_SUFFIX = ".hparams-experiment"
SHOWN_HPARAMS = 5  # the HParams table ticks this many by default
HEADLINE_METRICS = ("val_dice", "val_auc", "val_accuracy", "val_balanced_accuracy", "val_hd95")
NOT_SETTINGS = {"task", "run", "model", "seed", "out", "data_dir", "cache_dir", "dataset"}
FILLERS = ("epochs", "lr")  # shown when fewer settings differ: the table always ticks five


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


def final_scores(metrics):
    """The validation scores worth a column: `val_*` numbers, not their spreads or intervals."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith("val_")
        and not key.endswith(("_std", "_mean", "_ci"))
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
    }


def write_hparams(task, root, run_dir, label, parameters, final_metrics, model=None):
    """Record a trained model for the HParams table: its session (parameters and `final/*`
    scores) beside its validation curves, and the task's experiment rebuilt with it.

    Args:
        task: `segmentation`, `cam` or `transfer`: the first part of the run's name.
        root: the task's output folder (`--out`), which holds the run folders.
        run_dir: the run's folder (or a fold's) inside `root`.
        label: the experiment or model, e.g. `4a`, `bone`, `head`.
        model: the subfolder of a run that trains several models (`head`, `scratch`).
    """
    root, run_dir = Path(root), Path(run_dir)
    name = "/".join([task, *run_dir.relative_to(root).parts, *([model] if model else [])])
    # Short values: the table cuts each cell at about 15 characters.
    hparams = {"task": task, "model": label, "run": short_stamp(run_dir.relative_to(root))}
    hparams.update({k: hparam_value(v) for k, v in parameters.items() if k not in hparams})
    hparams.pop("experiment", None)  # the model column
    scores = final_scores(final_metrics)
    session_dir = log_dir_for(run_dir, model) / SESSION_FOLDER
    writer = tf.summary.create_file_writer(str(session_dir))
    with writer.as_default():
        hparams_summary.hparams(hparams, trial_id=name)
        for metric, value in scores.items():
            tf.summary.scalar(f"final/{metric}", value, step=0)
    writer.close()
    record = {"task": task, "name": name, "hparams": hparams, "metrics": sorted(scores)}
    write_text_atomic(session_dir / RECORD, json.dumps(record, indent=1) + "\n")
    write_experiments(root, session_dir)


def short_stamp(relative_run):
    """`20261202-114959-4a/fold2` -> `12-02 11:49:59/fold2`: when the run was made, short."""
    first, *rest = relative_run.parts
    match = re.match(r"\d{4}(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)", first)
    when = "{}-{} {}:{}:{}".format(*match.groups()) if match else first
    return "/".join([when, *rest])


def sessions_of(task_root):
    """{session folder: its record} of the runs in a task's output folder, oldest first."""
    found = {}
    for pattern in RECORD_PATTERNS:
        for path in Path(task_root).glob(pattern):
            try:
                found[path.parent] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a damaged record leaves its run out of the table, nothing else
    return dict(sorted(found.items()))


def write_experiments(root, home):
    """The same experiment, over the runs of every task that shares `root`'s parent, once per
    task: in `home` (the new run's session) for `root`, where it already is for the others."""
    tasks = {Path(root): sessions_of(root)}
    for sibling in Path(root).parent.iterdir():
        if sibling.is_dir() and sibling not in tasks:
            tasks[sibling] = sessions_of(sibling)
    tasks = {task_root: sessions for task_root, sessions in tasks.items() if sessions}
    experiment = experiment_config([r for sessions in tasks.values() for r in sessions.values()])
    for task_root, sessions in tasks.items():
        holding = [s for s in sessions if any(s.glob(f"*tfevents*{EXPERIMENT_SUFFIX}"))]
        target = home if task_root == Path(root) else (holding or list(sessions))[-1]
        write_experiment(target, experiment)
        for folder in holding:
            if folder != target:
                remove_experiment(folder)


def experiment_config(runs):
    """The HParams experiment of some runs' records: which hparams and metrics, in which order."""
    shown = ["task", "model", "run", *differing_settings(runs), *FILLERS]
    shown = [key for key in dict.fromkeys(shown) if any(key in run["hparams"] for run in runs)]
    shown = shown[:SHOWN_HPARAMS]
    names = list(dict.fromkeys(key for run in runs for key in run["hparams"]))
    values = {key: [run["hparams"][key] for run in runs if key in run["hparams"]] for key in names}
    hparam_infos = [hparam_info(key, values[key], key in shown) for key in names]
    metrics = {metric for run in runs for metric in run["metrics"]}
    ordered = [m for m in HEADLINE_METRICS if m in metrics] + sorted(metrics - {*HEADLINE_METRICS})
    metric_infos = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"final/{m}"), display_name=f"final/{m}")
        for m in ordered
    ]
    return api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metric_infos)


def differing_settings(runs):
    """Settings whose value differs between the runs of one task, in the order they were given."""
    keys = []
    for task in dict.fromkeys(run["task"] for run in runs):
        same_task = [run["hparams"] for run in runs if run["task"] == task]
        for key in dict.fromkeys(k for hparams in same_task for k in hparams):
            values = {json.dumps(hparams.get(key)) for hparams in same_task}
            if key not in NOT_SETTINGS and len(values) > 1 and key not in keys:
                keys.append(key)
    return keys


def hparam_info(name, values, shown):
    """One column: its type from its values (text when they are mixed), ticked when `shown`
    (TensorBoard ticks the hparams marked `differs` first)."""
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        kind = api_pb2.DATA_TYPE_BOOL
    elif kinds <= {int, float}:
        kind = api_pb2.DATA_TYPE_FLOAT64
    else:
        kind = api_pb2.DATA_TYPE_STRING
    info = api_pb2.HParamInfo(name=name, display_name=name, type=kind, differs=shown)
    if kind == api_pb2.DATA_TYPE_STRING:
        # Every value as it was logged (a column can mix text and numbers across tasks): the
        # table filters rows by this list, and would hide a row whose value it lacks.
        distinct = {json.dumps(v): v for v in values}
        info.domain_discrete.extend(distinct[k] for k in sorted(distinct))
    return info


def write_experiment(folder, experiment):
    """Write `folder`'s experiment file, replacing its earlier one (a running TensorBoard keeps
    the columns it read first, so it shows new ones once restarted)."""
    before = set(Path(folder).glob(f"*tfevents*{EXPERIMENT_SUFFIX}"))
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=hparams_metadata.EXPERIMENT_TAG,
        metadata=hparams_metadata.create_summary_metadata(content),
        tensor=hparams_metadata.NULL_TENSOR,
    )
    writer = tf.summary.create_file_writer(str(folder), filename_suffix=EXPERIMENT_SUFFIX)
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
    writer.close()
    for old in before:
        old.unlink(missing_ok=True)


def remove_experiment(folder):
    for old in Path(folder).glob(f"*tfevents*{EXPERIMENT_SUFFIX}"):
        old.unlink(missing_ok=True)


def write_png(log_dir, tag, png_path, step=0):
    """A figure that a run saved as PNG (overlays, the Grad-CAM grid), for the Images tab."""
    image = tf.io.decode_png(tf.io.read_file(str(png_path)), channels=3)
    writer = tf.summary.create_file_writer(str(Path(log_dir) / SESSION_FOLDER))
    with writer.as_default():
        tf.summary.image(tag, image[None], step=step)
    writer.close()


class OverlayLogger(keras.callbacks.Callback):
    """Validation images with the true (green) and predicted (red) outline, every `every`
    epochs and after the last, in the Images tab: the segmentation learning as it happens."""

    def __init__(self, log_dir, images, masks, epochs, every=None):
        super().__init__()
        self.log_dir = Path(log_dir) / SESSION_FOLDER
        self.images, self.masks, self.epochs = np.asarray(images), np.asarray(masks), epochs
        self.every = every or max(1, epochs // 5)
        self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return
        # A direct call: `predict` would trace a function of its own, seconds for a few images.
        predictions = keras.ops.convert_to_numpy(self.model(self.images, training=False)) > 0.5
        pictures = [
            outlined(image, mask > 0.5, prediction)
            for image, mask, prediction in zip(self.images, self.masks, predictions)
        ]
        self.writer = self.writer or tf.summary.create_file_writer(str(self.log_dir))
        with self.writer.as_default():
            tf.summary.image(
                "overlays: truth (green) vs prediction (red)",
                np.stack(pictures),
                step=epoch + 1,
                max_outputs=len(pictures),
            )
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer:
            self.writer.close()


def outlined(image, truth, prediction):
    """An RGB picture of a grey [0, 1] image with the outlines of two masks, green and red."""
    rgb = np.repeat(np.clip(image[..., :1], 0, 1), 3, axis=-1).astype(np.float32)
    for mask, colour in ((truth, (0.0, 1.0, 0.0)), (prediction, (1.0, 0.0, 0.0))):
        rgb[edge(mask[..., 0])] = colour
    return rgb


def edge(mask):
    """The pixels of a boolean mask that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner
