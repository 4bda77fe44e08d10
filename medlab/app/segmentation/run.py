"""The run of `main_segmentation.py`'s pipeline: the summary folder and one folder per experiment
(or per fold), resume, what each trained model leaves behind, and the pooled scores of folds.

The pipeline gets the experiments to train from `SegmentationRun.open_folders()` as a plain list,
asks `is_complete` (an earlier invocation finished it) and `make_folder` for each, hands each
trained model to `save()`, and ends with `finish()`, which pools folds and writes the summary.

In a multi-process run only process 0 writes the run's folders. The others train in a scratch
folder of their own (a copy of the folder being resumed, if any), so that every process takes the
same steps while training, checkpoints included: JAX gathers a value from every process then.
"""

import csv
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

import unet
from medlab import plots
from medlab.app import data_record, tensorboard_logs
from medlab.app.cli import parameter_rows
from medlab.app.collapse import print_bold
from medlab.app.runs import (
    mark_complete,
    mark_incomplete,
    new_run_dir,
    resume_with,
    save_config,
    write_json,
)
from medlab.app.segmentation.folders import (
    checked_summary_folder,
    pairs_record,
    save_plan,
    summary_folder,
)
from medlab.app.segmentation.grouping import group_splits
from medlab.app.segmentation.parameters import DECLARED
from medlab.app.segmentation.summary import collapse_message, write_per_image, write_summary
from medlab.app.sidecars import write_sidecar
from medlab.atomic import copy_folder_being_written, save_model_atomic
from medlab.faults import crash_point

OVERLAY_IMAGES = 4  # validation images outlined in TensorBoard every few epochs


@dataclasses.dataclass
class Experiment:
    """One model to train: an experiment, or one fold of it."""

    name: str  # "4a", or "4a-fold2"
    experiment: str  # "4a"
    parameters: dict
    split: tuple  # (training indices, validation indices) into the pairs
    folder: Path
    cache_dir: Path = None  # where --cache disk keeps the decoded pairs
    fold: int = 0  # 1, 2, ... with --folds; 0 without
    result: tuple = None  # (metrics, per-image scores), set by `save` or `is_complete`


class SegmentationRun:
    """The experiments of one invocation (or of the one being resumed) and their folders."""

    def __init__(self, plan, comparisons, scaling, resume=None):
        self.plan, self.comparisons = plan, comparisons  # plan: {name: cli.Resolved}
        self.scaling, self.resume = scaling, resume
        self.first = next(iter(plan.values())).values
        self.experiments = []
        self.scratch = None if scaling.writes else Path(tempfile.mkdtemp(prefix="medlab-"))

    def open_folders(self, pairs):
        """Make the summary folder (the pairs have proved good) and return the experiments to
        train, in order, as a plain list: each experiment, or each fold of it with --folds."""
        self.pairs = pairs
        self.splits = data_splits(pairs["names"], self.first)
        if self.scratch:
            self.summary_dir = scratch_copy(self.first["out"], self.resume, self.scratch)
        else:
            self.summary_dir = summary_folder(self.first["out"], self.resume)
        self.stamp = self.summary_dir.name.removesuffix("-summary")
        self.record = pairs_record(self.first, self.splits)
        if self.resume:
            data_record.check_resume(self.summary_dir, self.record)
        else:
            data_record.save(self.summary_dir, self.record)
        save_plan(self.summary_dir, self.plan)
        disk = pairs["cache"] == "disk"
        self.cache_dir = fresh_folder(self.summary_dir / "cache") if disk else None
        self.experiments = []
        for name, resolved in self.plan.items():
            folder = self.summary_dir.parent / f"{self.stamp}-{name}"
            if len(self.splits) == 1:
                entry = Experiment(
                    name, name, resolved.values, self.splits[0], folder, self.cache_dir
                )
                self.experiments.append(entry)
                continue
            for k, split in enumerate(self.splits, 1):
                cache = self.cache_dir / f"fold{k}" if self.cache_dir else None
                entry = Experiment(
                    f"{name}-fold{k}", name, resolved.values, split, folder / f"fold{k}", cache, k
                )
                self.experiments.append(entry)
        return self.experiments

    def is_complete(self, experiment):
        """True when an earlier invocation finished `experiment` (its results are read back), or
        the whole cross-validated experiment it is a fold of."""
        train, val = experiment.split
        print(
            f"{len(self.pairs['names'])} pairs from {self.pairs['data_dir']}: {len(train)} "
            f"training, {len(val)} validation (--cache {self.pairs['cache']})"
        )
        if experiment.fold and (experiment.folder.parent / "metrics.json").is_file():
            return True  # `finish` reads the pooled results back
        if not (experiment.folder / "metrics.json").is_file():
            return False
        print(f"{experiment.name}: already complete in {experiment.folder}")
        mark_complete(experiment.folder)  # in case the kill came between metrics.json and this
        experiment.result = reload_run(experiment.folder)
        return True

    def make_folder(self, experiment):
        """The experiment's folder (marked incomplete until its metrics.json), its config.json
        and, with --cache disk, an empty cache folder."""
        if experiment.fold:
            experiment.folder.parent.mkdir(exist_ok=True)
            mark_incomplete(experiment.folder.parent)
        experiment.folder.mkdir(exist_ok=bool(self.resume))
        mark_incomplete(experiment.folder)
        data_record.save(experiment.folder, self.record)  # what evaluate --held-out checks
        if experiment.cache_dir is not None and experiment.fold:
            fresh_folder(experiment.cache_dir)
        where = f"{experiment.folder.name}, written by process 0" if self.scratch else None
        print(f"\n=== experiment {experiment.name} -> {where or experiment.folder}")
        save_config(
            experiment.folder,
            {
                "experiment": experiment.name,
                **experiment.parameters,
                "data_dir": self.pairs["data_dir"],
                "cache_used": self.pairs["cache"],
                "replicas": self.scaling.replicas,
                "backend": self.scaling.backend,
                "processes": self.scaling.processes,
            },
        )

    def typed(self):
        """The parameters typed on the command line (the same for every experiment): a command
        that reruns an experiment keeps them, so it trains on the same data."""
        resolved = next(iter(self.plan.values()))
        return {k: v for k, v in resolved.values.items() if resolved.source(k).startswith("flag")}

    def batch_size(self, experiment):
        """The global batch: the per-replica batch times the replicas of the strategy."""
        return self.scaling.global_batch(experiment.parameters["batch_size"])

    def callbacks(self, experiment):
        """Keras callbacks of the application: TensorBoard's per-epoch scalars, and outlines of a
        few validation images every few epochs (its Images tab)."""
        log_dir = tensorboard_logs.log_dir_for(experiment.folder)
        callbacks = [tensorboard_logs.epoch_logger(log_dir)]
        if self.scaling.processes == 1:
            # A prediction mid-training over several processes would be a step that every process
            # must take together; their run's overlays come from the end of training instead.
            images, masks = self.validation_sample(experiment.split[1][:OVERLAY_IMAGES])
            epochs = experiment.parameters["epochs"]
            callbacks.append(tensorboard_logs.OverlayLogger(log_dir, images, masks, epochs))
        return callbacks

    def validation_sample(self, indices):
        """Decoded images and masks of some pairs, whichever way `--cache` keeps them."""
        images, masks = (self.pairs["pairs"][part][indices] for part in (0, 1))
        if images.dtype != object:
            return images, masks
        size = self.pairs["size"]
        return unet.load_images(list(images), size), unet.load_masks(list(masks), size)

    def save(self, experiment, model, val_data, seconds, scores, shown):
        """What a trained experiment leaves in its folder: model.keras, per_image.csv, curves,
        overlays, TensorBoard's HParams and metrics.json (last, the mark of a complete run).

        Args:
            val_data: the validation batches, to score the best checkpoint (and, with
                postprocess, the raw masks) as well.
            seconds, scores, shown: from `unet.train` and `unet.evaluate_batches`.
        """
        if self.scratch:
            return  # process 0 of the run saves and reports; experiment.result stays None
        name, p, folder = experiment.name, experiment.parameters, experiment.folder
        val_names = [self.pairs["names"][i] for i in experiment.split[1]]
        save_model_atomic(model, folder / "model.keras")
        for saved in ("model.keras", "best.keras"):
            write_sidecar(
                folder / saved,
                input_size=p["size"],
                channels=1,
                input_scale=1.0,
                class_names=["background", "lung"],
                positive_class="lung",
                postprocess=p["postprocess"],
                tta=p["tta"],
                made_by="main_segmentation.py",
            )
        metrics, history = self.metrics(experiment, model, val_data, seconds, scores)
        if metrics["collapsed"]:
            message = collapse_message(
                experiment.experiment,
                metrics["collapsed_to"],
                len(scores["dice"]),
                p,
                self.typed(),
            )
            print_bold(f"warning: {name}: {message}" if experiment.fold else f"warning: {message}")
        write_per_image(folder / "per_image.csv", val_names, scores)
        plots.plot_curves(
            {name: history},
            folder / "curves.png",
            metrics=("loss", "dice_coefficient"),
            titles={"loss": f"loss ({p['loss']})", "dice_coefficient": "soft Dice"},
        )
        unet.plot_overlays(*shown, scores["dice"], folder / "overlays.png", val_names)
        log_dir = tensorboard_logs.log_dir_for(folder)
        tensorboard_logs.write_png(
            log_dir, "overlays of the final model", folder / "overlays.png", metrics["epochs"]
        )
        tensorboard_logs.write_hparams(
            "segmentation", self.summary_dir.parent, folder, name, p, metrics
        )
        finish_experiment(folder, metrics)
        print_scores(name, metrics, seconds, p["postprocess"])
        experiment.result = (metrics, {**scores, "image": val_names})

    def metrics(self, experiment, model, val_data, seconds, scores):
        """metrics.json of a trained experiment, and its history."""
        p, folder = experiment.parameters, experiment.folder
        best = unet.load_unet(folder / "best.keras")
        best_scores, _ = unet.evaluate_batches(
            best, val_data, postprocess=p["postprocess"], tta=p["tta"]
        )
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
            raw_scores, _ = unet.evaluate_batches(model, val_data, tta=p["tta"])
            metrics["without_postprocess"] = unet.score_summary(raw_scores)
        metrics["collapsed_to"] = unet.collapsed(scores, masks_empty=self.pairs["masks_empty"])
        metrics["collapsed"] = metrics["collapsed_to"] is not None
        return metrics, history

    def finish(self):
        """Each cross-validated experiment's folds pooled, then the summary of every experiment,
        its parameter table and the comparisons; the run is then complete."""
        if self.scratch:
            shutil.rmtree(self.scratch)
            print(
                f"\nprocess {self.scaling.process_index} of {self.scaling.processes}: training "
                "done; process 0 writes the results and the summary"
            )
            return
        runs = {}
        for name, resolved in self.plan.items():
            entries = [e for e in self.experiments if e.experiment == name]
            folder = self.summary_dir.parent / f"{self.stamp}-{name}"
            unsaved = [e.name for e in entries if e.result is None]
            if unsaved and not (folder / "metrics.json").is_file():
                raise RuntimeError(
                    f"{', '.join(unsaved)}: neither complete nor saved; the pipeline's loop must "
                    "call run.save(experiment, ...) for every experiment it trains"
                )
            if not entries[0].fold:
                result = entries[0].result
            elif (folder / "metrics.json").is_file():
                print(f"{name}: already complete in {folder}")
                mark_complete(folder)
                result = reload_run(folder)
            else:
                result = finish_folds(name, folder, [e.result for e in entries])
            runs[name] = (*result, folder, resolved.values)
        table = parameter_rows(self.plan, list(DECLARED))
        seed = self.first["seed"]
        write_summary(self.summary_dir, runs, table, self.comparisons, seed, self.typed())
        if self.cache_dir is not None:
            # As large as the decoded data set; rebuilt if ever needed.
            shutil.rmtree(self.cache_dir)
        mark_complete(self.summary_dir)
        resume_with(None)
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


def scratch_copy(out, resume, scratch):
    """The summary folder of a process that leaves the run's folders to process 0: a new one in
    `scratch`, or a copy there of the run being resumed, the summary and every experiment's folder
    next to it (process 0 may change them meanwhile)."""
    if not resume:
        return new_run_dir(scratch, "summary")
    # Process 0 holds the folder's lock and marks it; this process only reads it.
    source = checked_summary_folder(resume)
    stamp = source.name.removesuffix("-summary")
    for folder in source.parent.glob(f"{stamp}-*"):
        copy_folder_being_written(folder, scratch / folder.name)
    return scratch / source.name


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
        "collapsed_to": next((f["collapsed_to"] for f, _ in results if f.get("collapsed")), None),
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
