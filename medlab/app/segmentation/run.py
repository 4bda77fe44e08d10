"""The run of `main_segmentation.py`'s pipeline: the summary folder and one folder per experiment
(or per fold), resume, what each trained model leaves behind, and the pooled scores of folds.

The pipeline asks `SegmentationRun.pending()` for the experiments still to train and hands each
trained model back to `save()`; experiments an earlier invocation completed are read back here.
"""

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from medlab.app.collapse import print_bold
from medlab.app.faults import crash_point
from medlab.app.runs import (
    UserError,
    mark_complete,
    mark_incomplete,
    new_run_dir,
    save_config,
    set_seed,
    write_json,
)
from medlab.app.segmentation.grouping import group_splits
from medlab.app.segmentation.summary import collapse_message, write_per_image, write_summary
from medlab.atomic import save_model_atomic
from medlab.lazy import lazy_import

unet = lazy_import("unet")
plots = lazy_import("medlab.plots")
tensorboard_logs = lazy_import("medlab.app.tensorboard_logs")


@dataclasses.dataclass
class Experiment:
    """One model to train: an experiment, or one fold of it."""

    name: str
    parameters: dict
    split: tuple  # (training indices, validation indices) into the pairs
    folder: Path
    cache_dir: Path = None  # where --cache disk keeps the decoded pairs
    result: tuple = None  # (metrics, per-image scores), set by `SegmentationRun.save`


class SegmentationRun:
    """The experiments of one invocation (or of the one being resumed) and their folders."""

    def __init__(self, plan, setting_keys, comparisons, scaling, resume=None):
        self.plan, self.setting_keys, self.comparisons = plan, setting_keys, comparisons
        self.scaling, self.resume = scaling, resume
        self.first = next(iter(plan.values()))
        self.runs = {}  # name: (metrics, scores, folder, parameters)

    def pending(self, pairs):
        """The experiments (or folds) still to train, in order, once the summary folder is made
        (the pairs have proved good); complete ones of a resumed run are read back instead."""
        self.open_folders(pairs)
        for name, p in self.plan.items():
            folder = self.summary_dir.parent / f"{self.stamp}-{name}"
            if len(self.splits) > 1:
                result = yield from self.folds(name, p, folder)
            else:
                result = yield from self.single(name, p, self.splits[0], folder, self.cache_dir)
            self.runs[name] = (*result, folder, p)

    def open_folders(self, pairs):
        self.pairs = pairs
        self.splits = data_splits(pairs["names"], self.first)
        self.summary_dir = summary_folder(self.first["out"], self.resume)
        self.stamp = self.summary_dir.name.removesuffix("-summary")
        write_json(self.summary_dir / "runs.json", self.plan)
        disk = pairs["cache"] == "disk"
        self.cache_dir = fresh_folder(self.summary_dir / "cache") if disk else None

    def single(self, name, p, split, folder, cache_dir):
        """Yields the experiment to train unless it is complete; returns its (metrics, scores)."""
        print(
            f"{len(self.pairs['names'])} pairs from {self.pairs['data_dir']}: {len(split[0])} "
            f"training, {len(split[1])} validation (--cache {self.pairs['cache']})"
        )
        finished = reload_if_complete(name, folder, self.resume)
        if finished:
            return finished
        experiment = Experiment(name, p, split, folder, cache_dir)
        print(f"\n=== experiment {name} -> {folder}")
        save_config(
            folder,
            {
                "experiment": name,
                **p,
                "data_dir": self.pairs["data_dir"],
                "cache_used": self.pairs["cache"],
                "replicas": self.scaling.replicas,
            },
        )
        set_seed(p["seed"])
        yield experiment
        return experiment.result

    def folds(self, name, p, folder):
        """One run per fold in folder/fold<k>, then every held-out image's scores pooled (each
        image is scored once, by the model that did not see it); --resume keeps complete folds."""
        finished = reload_if_complete(name, folder, self.resume)
        if finished:
            return finished
        results = []
        for k, split in enumerate(self.splits, 1):
            cache = fresh_folder(self.cache_dir / f"fold{k}") if self.cache_dir else None
            fold = yield from self.single(f"{name}-fold{k}", p, split, folder / f"fold{k}", cache)
            results.append(fold)
        return finish_folds(name, folder, results)

    def batch_size(self, experiment):
        """The global batch: the per-replica batch times the replicas of the strategy."""
        return self.scaling.global_batch(experiment.parameters["batch_size"])

    def callbacks(self, experiment):
        """Keras callbacks of the application: TensorBoard's per-epoch scalars."""
        log_dir = tensorboard_logs.log_dir_for(experiment.folder)
        return [tensorboard_logs.epoch_logger(log_dir)]

    def save(self, experiment, model, val_data, seconds, scores, shown):
        """What a trained experiment leaves in its folder: model.keras, per_image.csv, curves,
        overlays, TensorBoard's HParams and metrics.json (last, the mark of a complete run).

        Args:
            val_data: the validation batches, to score the best checkpoint (and, with
                postprocess, the raw masks) as well.
            seconds, scores, shown: from `unet.train` and `unet.evaluate_batches`.
        """
        name, p, folder = experiment.name, experiment.parameters, experiment.folder
        val_names = [self.pairs["names"][i] for i in experiment.split[1]]
        save_model_atomic(model, folder / "model.keras")
        metrics, history = self.metrics(experiment, model, val_data, seconds, scores)
        if metrics["collapsed"]:
            message = collapse_message(
                name, metrics["collapsed_to"], len(scores["dice"]), p["loss"]
            )
            print_bold(f"warning: {message}")
        write_per_image(folder / "per_image.csv", val_names, scores)
        plots.plot_curves(
            {name: history},
            folder / "curves.png",
            metrics=("loss", "dice_coefficient"),
            titles={"loss": f"loss ({p['loss']})", "dice_coefficient": "soft Dice"},
        )
        unet.plot_overlays(*shown, scores["dice"], folder / "overlays.png", val_names)
        tensorboard_logs.write_hparams(
            tensorboard_logs.log_dir_for(folder),
            {"experiment": name, **p},
            metrics,
            f"{folder.parent.name}/{folder.name}",
        )
        finish_experiment(folder, metrics)
        print_scores(name, metrics, seconds, p["postprocess"])
        experiment.result = (metrics, {**scores, "image": val_names})

    def metrics(self, experiment, model, val_data, seconds, scores):
        """metrics.json of a trained experiment, and its history."""
        p, folder = experiment.parameters, experiment.folder
        best = unet.load_unet(folder / "best.keras")
        best_scores, _ = unet.evaluate_batches(best, val_data, postprocess=p["postprocess"])
        history = plots.read_history(folder / "history.csv")
        metrics = {
            "experiment": experiment.name,
            **unet.score_summary(scores),
            "epochs": len(history["loss"]),
            "train_seconds": round(seconds, 1),
            "validation_images": len(scores["dice"]),
            "best_checkpoint": {
                "epoch": int(np.argmax(history["val_dice_coefficient"])) + 1,
                **unet.score_summary(best_scores),
                "note": "epoch chosen on the validation set: optimistic",
            },
        }
        if p["postprocess"]:
            raw_scores, _ = unet.evaluate_batches(model, val_data)
            metrics["without_postprocess"] = unet.score_summary(raw_scores)
        metrics["collapsed_to"] = unet.collapsed(scores, masks_empty=self.pairs["masks_empty"])
        metrics["collapsed"] = metrics["collapsed_to"] is not None
        return metrics, history

    def finish(self):
        """The summary of every experiment and their comparisons; the run is then complete."""
        seed = self.first["seed"]
        write_summary(self.summary_dir, self.runs, self.setting_keys, self.comparisons, seed)
        if self.cache_dir is not None:
            shutil.rmtree(
                self.cache_dir
            )  # as large as the decoded data set; rebuilt if ever needed
        mark_complete(self.summary_dir)
        print(f"\nsummary: {self.summary_dir / 'summary.md'}")


def print_scores(name, metrics, seconds, postprocess):
    print(
        f"{name}: validation Dice {metrics['val_dice']:.3f} +- {metrics['val_dice_std']:.3f}, "
        f"HD95 {metrics['val_hd95']:.1f} px ({seconds:.0f} s)"
    )
    if postprocess:
        raw = metrics["without_postprocess"]
        print(
            f"{name}: without --postprocess: Dice {raw['val_dice']:.3f}, "
            f"HD95 {raw['val_hd95']:.1f} px"
        )


def summary_folder(out, resume):
    """A new folder for this invocation (or the one being resumed) and the stamp its runs share."""
    if resume:
        folder = Path(resume)
        if not (folder / "runs.json").is_file():
            raise UserError(
                f"{folder} is not a summary folder of an earlier run (no runs.json); "
                "pass the *-summary folder that the interrupted run printed"
            )
        return folder
    return new_run_dir(out, "summary")


def data_splits(names, p):
    """[(train, validation)] indices of the pairs named `names`: the seeded split, or the seeded
    folds when --folds K >= 2; with --groups, splits that keep each group on one side."""
    if p.get("groups", "none") != "none":
        return group_splits(names, p)
    count = len(names)
    if p.get("folds", 0) >= 2:
        return unet.fold_indices(count, p["folds"], p["seed"])
    return [unet.split_indices(count, p["val_fraction"], p["seed"])]


def fresh_folder(path):
    """An empty folder at `path`: a cache left by an interrupted run is incomplete and locked."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def reload_if_complete(name, run_dir, resume):
    """The saved results of a run an earlier invocation completed, else None once `run_dir` is
    made and marked incomplete for the run about to start."""
    if (run_dir / "metrics.json").is_file():
        print(f"{name}: already complete in {run_dir}")
        mark_complete(run_dir)  # in case the kill came between metrics.json and this mark
        return reload_run(run_dir)
    run_dir.mkdir(exist_ok=resume)
    mark_incomplete(run_dir)
    return None


def reload_run(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return metrics, {
        **{m: np.array([float(r[m]) for r in rows]) for m in unet.METRICS},
        "image": [r["image"] for r in rows],
    }


def finish_experiment(run_dir, metrics):
    """metrics.json last, as the mark of a complete experiment (resume skips it), then the backup,
    which only an unfinished experiment needs, goes."""
    crash_point("before-metrics")
    write_json(run_dir / "metrics.json", metrics)
    mark_complete(run_dir)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)


def finish_folds(name, folder, results):
    """The pooled (metrics, scores) of an experiment's folds, written to its folder."""
    metrics, scores = pooled_folds(name, results)
    write_mean_history(
        folder / "history.csv",
        [folder / f"fold{k}" / "history.csv" for k in range(1, len(results) + 1)],
    )
    write_per_image(folder / "per_image.csv", scores["image"], scores)
    write_json(folder / "metrics.json", metrics)  # last: the mark of a complete experiment
    mark_complete(folder)
    print(
        f"{name}: {len(results)}-fold Dice {metrics['folds_dice_mean']:.3f} "
        f"+- {metrics['folds_dice_std']:.3f} over folds; pooled over "
        f"{metrics['validation_images']} images {metrics['val_dice']:.3f}"
    )
    return metrics, scores


def pooled_folds(name, results):
    """Metrics of the folds' (metrics, scores) results: per-image scores pooled, per-fold means."""
    scores = {m: np.concatenate([s[m] for _, s in results]) for m in unet.METRICS}
    scores["image"] = [n for _, s in results for n in s["image"]]
    per_fold = {m: [fold[f"val_{m}"] for fold, _ in results] for m in unet.METRICS}
    best = [fold["best_checkpoint"]["val_dice"] for fold, _ in results]
    return {
        "experiment": name,
        **unet.score_summary(scores),
        **{
            f"folds_{m}_{stat}": float(f(per_fold[m]))
            for m in unet.METRICS
            for stat, f in (("mean", np.mean), ("std", np.std))
        },
        "folds": len(results),
        "epochs": results[0][0]["epochs"],
        "train_seconds": round(sum(fold["train_seconds"] for fold, _ in results), 1),
        "validation_images": len(scores["image"]),
        "best_checkpoint": {
            "val_dice": float(np.mean(best)),
            "note": "mean over folds of each fold's best "
            "checkpoint, its epoch chosen on the held-out images: optimistic",
        },
        "collapsed": any(fold.get("collapsed", False) for fold, _ in results),
    }, scores


def write_mean_history(path, fold_histories):
    """The folds' learning curves averaged epoch by epoch (the curve of a cross-validated run)."""
    histories = [plots.read_history(h) for h in fold_histories]
    epochs = min(len(h["loss"]) for h in histories)
    keys = [k for k in histories[0] if k != "epoch" and all(k in h for h in histories)]
    rows = [
        {"epoch": e, **{k: float(np.mean([h[k][e] for h in histories])) for k in keys}}
        for e in range(epochs)
    ]
    plots.write_csv(path, rows, ["epoch", *keys])
