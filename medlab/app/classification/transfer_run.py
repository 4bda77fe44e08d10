"""Tasks 1-2's application (`transfer_vgg16.py`): `start` turns the command line into a
`TransferRun` (flags, the data found and split, the checks, the distribution strategy), which then
loads the backbone and the features, opens the run folder, lists the (seed, fold) evaluations,
keeps what each training returns (`save`) and ends with the scores, their intervals and verdict,
metrics.json, TensorBoard's HParams, predictions.csv, the figures, the models with their sidecars
and summary.md (`finish`). `predict_command` is the `predict` subcommand. The Keras side
(backbone, feature cache, head, export, figures) is `medlab.classification.transfer`."""

import collections
import time
from pathlib import Path

import numpy as np

from medlab import quiet_tensorflow
from medlab.app import cli, resume, runs, sidecars
from medlab.app.classification.script import (
    ClassifierRun,
    Script,
    banner_settings,
    command_line,
    lab_preset,
    parameter_table,
    print_parameters,
    resolve,
)
from medlab.app.classification.transfer_parameters import DECLARED
from medlab.app.collapse import (
    learning_check,
    not_learnt_reason,
    not_learnt_sentence,
    print_bold,
    try_instead,
)
from medlab.app.comparisons import unlearnt_verdict
from medlab.app.data import locate_data
from medlab.app.report import Report
from medlab.atomic import save_model_atomic
from medlab.checks import check_fits_in_memory, check_writable_folder
from medlab.classification.data import load_arrays, load_class_split
from medlab.classification.metrics import binary_metrics, bootstrap_metrics, positive_label
from medlab.errors import UserError
from medlab.images import check_outside_data, load_image
from medlab.parameters import check_values

DATASETS = {"skin": "data/Skin", "bone": "data/Bone"}  # the choices of --dataset
# What to lower when a run runs out of memory.
LOWER_ON_OUT_OF_MEMORY = (
    "--batch-size, --image-size, --scratch-size, --scratch-batch-size, --scratch-base or "
    "--dense-units"
)
METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
THRESHOLD = 0.5

# What `--preset lab` sets: the handout's from-scratch model and training, as declared
# (docs/lab.md); the head's values are the handout's in every preset.
LAB = lab_preset(
    DECLARED,
    ("scratch_size", "scratch_channels", "scratch_base", "scratch_lr", "scratch_centre")
    + ("scratch_batch_norm", "scratch_pooling", "scratch_dropout", "scratch_lr_schedule")
    + ("scratch_epochs", "scratch_batch_size", "augment", "class_weight"),
)
# One training of both models: on which split or fold, with which seed; `tag` ends the names of
# its history files ("" for the first, whose models are saved).
Evaluation = collections.namedtuple("Evaluation", "name seed train val tag")


def start(argv, *, parameters, presets, demo, commands, doc):
    """Everything before the backbone: the flags, the data (the synthetic set if there is none),
    the parameters with their sources (printed), the split, the positive class, the distribution
    strategy and the memory check.

    Args:
        argv: the command line after the script's name.
        parameters: the script's PARAMETERS block; presets: its named settings (--preset).
        demo: the settings of the synthetic demo.
        commands: its subcommands; doc: its docstring (--help shows its first line, examples).
    Returns:
        The `TransferRun` the pipeline trains and reports with.
    """
    script = Script("transfer", parameters, presets, demo, commands, doc)
    args, typed = command_line(script, argv)
    if args.resume:  # the run's own settings and data
        resolved, saved = resume.saved_run(args.resume, typed, args.preset, DECLARED)
        data_dir, demo_used, args.preset = (
            Path(saved["data_dir"]),
            saved["synthetic"],
            saved["preset"],
        )
    else:
        data_dir, demo_used = find_data(script, typed, args.preset)
        resolved = resolve(script, typed, demo_used, args.preset)
        check_parameters(resolved.values)
        print_parameters(script, resolved, args.preset)
    run = TransferRun(script, args, typed, resolved, data_dir, demo_used)
    run.params = {**resolved.values, "preset": args.preset}
    run.check_data()
    return run


class TransferRun(ClassifierRun):
    """Tasks 1-2's run: the split, the features, the run folder, every training and the report."""

    def check_data(self):
        """The split and the positive class; then TensorFlow, the strategy and the memory check."""
        from medlab.distribute import check_precision, configure_scaling

        params = self.params
        check_writable_folder(params["cache_dir"], "--cache-dir")  # before the slow extraction
        self.split = load_class_split(self.data_folder, params["val_fraction"], params["seed"])
        check_outside_data(params["out"], "--out")  # now that the data is known, before extraction
        print(self.split.describe())
        self.check_resumed_data()
        self.positive = positive_class(self.split.class_names, params["positive"])
        # TensorFlow starts only now, so that a typo answers at once. The distribution strategy
        # comes before TensorFlow runs anything (the multi-worker one needs that).
        quiet_tensorflow()
        self.scaling = configure_scaling(
            params["strategy"], jit=params["jit"], batch_size=params["batch_size"]
        )
        check_precision(params["mixed_precision"])  # refused before the slow extraction, not after
        check_memory(params, len(self.split.train_paths) + len(self.split.val_paths))

    def load_backbone(self):
        """The frozen VGG16 base (--weights)."""
        self.backbone = load_backbone(self.params)
        return self.backbone

    def prepare_data(self, backbone):
        """Features (cached) and the from-scratch model's images of every image, with labels."""
        self.data = prepare_data(self.split, backbone, self.params)
        return self.data

    def open_folder(self):
        """The run folder (new, or --resume's), with config.json."""
        params = self.params
        self.facts = run_facts(
            self.data_folder, bool(self.demo), self.split, self.positive, self.data, params
        )
        config = {
            "data_dir": str(self.facts["data_dir"]),
            "synthetic": self.facts["synthetic"],
            "class_names": self.facts["class_names"],
            "positive_class": self.facts["positive_name"],
        }
        self.open_run(self.facts["data_name"].lower(), config)
        print(f"writing results to {self.folder}")
        self.trained, self.kept = [], {}
        return self.folder

    def evaluations(self):
        """Every (seed, split or fold) to train both models on, announced as it starts."""
        params = self.params
        for repeat in range(params["seeds"]):
            seed = params["seed"] + repeat
            for name, train, val in self.data["evaluations"]:
                tag = "" if not self.trained else f"-{name}-seed{seed}"
                sizes = f"{len(train)} training, {len(val)} validation images"
                print(f"\n=== {name}, seed {seed}: {sizes}")
                yield Evaluation(name, seed, train, val, tag)

    def history(self, evaluation, model):
        """The CSV history of `model` ("transfer" or "scratch") in this evaluation."""
        return self.folder / f"history_{model}{evaluation.tag}.csv"

    def save(self, evaluation, models, scores, seconds):
        """Keep one evaluation's validation scores and times ({"transfer": ..., "scratch": ...});
        the first evaluation's models are the ones exported."""
        if not self.trained:
            self.kept = {"head": models["transfer"], "scratch": models["scratch"]}
        self.trained.append(
            {
                "name": evaluation.name,
                "seed": evaluation.seed,
                "tag": evaluation.tag,
                "val": evaluation.val,
                "scores": scores,
                "seconds": seconds,
            }
        )

    def finish(self):
        """Scores with intervals and the verdict, the learning checks, then every output."""
        params, names, labels = self.params, self.split.class_names, self.data["labels"]
        metrics, (truth, scores) = summarise(self.trained, labels, self.positive, params)
        checks, metrics["try_instead"] = learning_checks(
            self.trained, labels, names, params, self.typed, self.script.presets
        )
        for method, check in checks.items():
            metrics[method].update(check)
        withhold_verdict(metrics)
        metrics["evaluation"] = evaluation_facts(self.facts, self.data, params)
        self.write_outputs(metrics, truth, scores)
        print(f"\n{metrics['difference']['verdict']}")
        for line in not_learnt_lines(metrics):
            print_bold(line.strip("*"))
        self.end()
        print(f"summary: {self.folder / 'summary.md'}")
        return metrics

    def write_outputs(self, metrics, truth, scores):
        """metrics.json, TensorBoard, predictions.csv, figures, models and summary.md."""
        run_dir, params, names = self.folder, self.params, self.split.class_names
        runs.write_json(run_dir / "metrics.json", metrics)
        log_hparams(run_dir, params, metrics)
        write_predictions(run_dir, self.trained, self.data["paths"], self.data["labels"], names)
        write_figures(run_dir, self.trained, truth, scores, metrics, names, self.positive)
        save_models(run_dir, self.kept, self.backbone, params, names, self.positive)
        table = parameter_table(self.script, self.resolved, self.preset)
        write_summary(run_dir, metrics, params, self.facts, table)


def tensorboard_logger(csv_path):
    """The callback that logs a training's epochs for TensorBoard, beside its CSV history."""
    from medlab.app import tensorboard_logs

    return tensorboard_logs.epoch_logger(tensorboard_dir(csv_path))


def find_data(script, typed, preset=None):
    """The data folder and the demo settings that apply (only for the synthetic set)."""
    chosen = {**script.parameters, **typed}
    dataset = chosen["dataset"]
    if not chosen["data_dir"] and dataset not in DATASETS:
        raise UserError(
            f"--dataset {dataset} is unknown; choose one of {', '.join(DATASETS)} "
            "or pass --data-dir with your own folder"
        )
    return locate_data(
        chosen["data_dir"],
        DATASETS.get(dataset, ""),
        lambda: synthetic_set(dataset),
        f"generated {dataset} images",
        script.demo,
        # The banner shows what the run will use: your edits, the preset and the flags win.
        banner_settings(script, typed, preset),
    )


def synthetic_set(dataset):
    quiet_tensorflow()  # before the set's Keras progress bar starts TensorFlow
    from medlab.synthetic import skin_bone

    return skin_bone.synthetic_class_set(dataset)


def check_parameters(params):
    """Every setting against its declaration, and the combinations the declarations cannot say."""
    check_values(params, DECLARED)
    if params["folds"] == 1:
        raise UserError("--folds 1 is not cross-validation; use 0 (the split) or K >= 2")
    if params["scratch_size"] % 32:
        raise UserError(
            f"--scratch-size {params['scratch_size']} must be a multiple of 32 (five poolings)"
        )


def check_weights(weights):
    """A weights file must exist and be a Keras file (imagenet and none need nothing)."""
    from medlab.classification import transfer

    if weights in ("imagenet", "none"):
        return
    path = Path(weights)
    if path.is_dir():
        raise UserError(
            f"--weights {path} is a folder; pass the weights file inside it, such as "
            f"{path / transfer.IMAGENET_FILE}, or --weights imagenet or none"
        )
    if not path.is_file():
        raise UserError(
            f"weights file {path} does not exist; pass --weights imagenet, none, or the "
            f"path of a VGG16 notop weights file such as {transfer.IMAGENET_FILE}"
        )
    if not path.name.endswith(transfer.WEIGHTS_SUFFIXES):
        raise UserError(f"weights file {path} must be a Keras .h5, .weights.h5 or .keras file")


def positive_class(class_names, positive):
    """The label counted as positive for sensitivity."""
    if positive != "auto" and positive not in class_names:
        raise UserError(
            f"--positive {positive} is not a class; choose one of {', '.join(class_names)}"
        )
    return positive_label(class_names, positive)


def check_memory(params, images):
    """Refuse, before the backbone is built, settings the machine cannot train: the from-scratch
    model with its images, and the head with the features of every image."""
    from medlab.classification import vgg

    features = (params["image_size"] // 32) ** 2 * 512
    head_gb = (images * features * 4 + features * params["dense_units"] * 16) / 2**30
    # Extracting the features: batches of 16 images (`transfer.run_backbone`), the first block's
    # two 64-channel outputs at full size alive at once, in float32.
    head_gb += 16 * 2 * params["image_size"] ** 2 * 64 * 4 / 2**30
    scratch_gb = vgg.training_gb(
        params["scratch_size"],
        params["scratch_channels"],
        params["scratch_base"],
        scratch_batch_size(params),
        params["scratch_batch_norm"],
        params["scratch_pooling"],
        images,
    )
    what = (
        f"training at --image-size {params['image_size']} and "
        f"--scratch-size {params['scratch_size']} "
        f"with --dense-units {params['dense_units']}"
    )
    check_fits_in_memory(head_gb + scratch_gb, what, LOWER_ON_OUT_OF_MEMORY)


def load_backbone(params):
    """The frozen VGG16 base; without internet, the error names the offline alternatives."""
    from medlab.classification import transfer

    check_weights(params["weights"])
    try:
        return transfer.load_backbone(
            params["weights"], params["image_size"], params["feature_precision"]
        )
    except transfer.WeightsUnavailable as error:
        raise UserError(
            f"{error} or pass --weights PATH (a local VGG16 notop weights file), or --weights "
            "none for a smoke test"
        ) from None


def prepare_data(split, backbone, params):
    """Features and scratch-model images of train + validation, with their labels, in one order."""
    from medlab.classification import transfer

    paths = list(split.train_paths) + list(split.val_paths)
    labels = np.concatenate([split.train_labels, split.val_labels]).astype(np.int32)
    start = time.perf_counter()
    features, cache_hit = transfer.cached_features(
        backbone,
        paths,
        params["image_size"],
        params["preprocess"],
        params["cache_dir"],
        transfer.weights_fingerprint(backbone),
    )
    images = load_arrays(
        paths,
        (params["scratch_size"],) * 2,
        params["scratch_channels"],
        "loading images for the from-scratch model",
    )
    return {
        "paths": paths,
        "labels": labels,
        "features": features,
        "images": images,
        "cache_hit": cache_hit,
        "extract_seconds": time.perf_counter() - start,
        "evaluations": plan_evaluations(split, params["folds"], params["seed"]),
    }


def plan_evaluations(split, folds, seed):
    """(name, train indices, validation indices) into the list train paths + validation paths."""
    from medlab.classification import train as training

    labels = np.concatenate([split.train_labels, split.val_labels])
    if folds >= 2:
        return [
            (f"fold{k + 1}", train, held_out)
            for k, (train, held_out) in enumerate(training.stratified_folds(labels, folds, seed))
        ]
    n_train = len(split.train_paths)
    return [("split", np.arange(n_train), np.arange(n_train, labels.size))]


def run_facts(data_dir, synthetic, split, positive, data, params):
    """What config.json, metrics.json and summary.md say about the data and the evaluation."""
    evaluation = (
        f"stratified {params['folds']}-fold cross-validation on train+validation"
        if params["folds"] >= 2
        else f"the {split.layout}-layout validation set"
    ) + f", {params['seeds']} seed(s)"
    return {
        "data_dir": data_dir,
        "data_name": Path(data_dir).name + ("-synthetic" if synthetic else ""),
        "synthetic": synthetic,
        "describe": split.describe(),
        "class_names": split.class_names,
        "positive_name": split.class_names[positive],
        "evaluation": evaluation,
        "feature_shape": "x".join(map(str, data["features"].shape[1:])),
        "cache_hit": data["cache_hit"],
        "extract_seconds": data["extract_seconds"],
    }


def scratch_epochs(params):
    return params["scratch_epochs"] or params["epochs"]


def scratch_batch_size(params):
    return params["scratch_batch_size"] or params["batch_size"]


def oriented(labels, scores, positive):
    """Labels and scores with the positive class as 1, whichever label it has."""
    labels = np.asarray(labels)
    return (labels == positive).astype(int), (scores if positive == 1 else 1.0 - np.asarray(scores))


def first_seed_predictions(runs, labels, seed):
    """Validation labels and scores of the first seed, pooled over folds (each image once)."""
    chosen = [r for r in runs if r["seed"] == seed]
    index = np.concatenate([r["val"] for r in chosen])
    scores = {m: np.concatenate([r["scores"][m] for r in chosen]) for m in ("transfer", "scratch")}
    return index, labels[index], scores


def summarise(runs, labels, positive, params):
    """metrics.json: intervals on the pooled first-seed predictions, spread over all runs."""
    index, truth, scores = first_seed_predictions(runs, labels, params["seed"])
    truth_pos, oriented_scores = None, {}
    for method, values in scores.items():
        truth_pos, oriented_scores[method] = oriented(truth, values, positive)
    intervals = bootstrap_metrics(
        truth_pos, oriented_scores, params["bootstrap"], params["seed"], 0.95, THRESHOLD
    )
    per_run = [
        {
            "name": r["name"],
            "seed": r["seed"],
            **{
                m: binary_metrics(*oriented(labels[r["val"]], r["scores"][m], positive), THRESHOLD)
                for m in ("transfer", "scratch")
            },
        }
        for r in runs
    ]
    result = {}
    for method in ("transfer", "scratch"):
        point = binary_metrics(truth_pos, oriented_scores[method], THRESHOLD)
        result[method] = model_entry(point, intervals[method], [run[method] for run in per_run])
        result[method]["train_seconds"] = float(np.sum([r["seconds"][method] for r in runs]))
    result["difference"] = difference_entry(result, intervals["difference"], per_run)
    result["runs"] = per_run
    result["scored_images"] = int(index.size)
    return result, (truth_pos, oriented_scores)


def model_entry(point, intervals, per_run):
    """One model's pooled value, interval, and mean and spread over the runs, for every metric."""
    entry = {}
    for metric in METRICS:
        entry[f"val_{metric}"] = point[metric]
        entry[f"val_{metric}_ci"] = intervals[metric]
        values = [run[metric] for run in per_run]
        entry[f"val_{metric}_mean"] = float(np.nanmean(values))
        entry[f"val_{metric}_std"] = float(np.nanstd(values))
    return entry


def difference_entry(result, intervals, per_run):
    """Transfer minus scratch, as `model_entry`, with the verdict in words."""
    difference = {}
    for metric in METRICS:
        difference[f"val_{metric}"] = (
            result["transfer"][f"val_{metric}"] - result["scratch"][f"val_{metric}"]
        )
        difference[f"val_{metric}_ci"] = intervals[metric]
        spread = [run["transfer"][metric] - run["scratch"][metric] for run in per_run]
        difference[f"val_{metric}_mean"] = float(np.nanmean(spread))
        difference[f"val_{metric}_std"] = float(np.nanstd(spread))
    difference["verdict"] = difference_verdict(difference)
    return difference


def difference_verdict(difference):
    """Plain words: is transfer minus scratch accuracy outside the noise of the bootstrap?"""
    low, high = difference["val_accuracy_ci"]
    value = difference["val_accuracy"]
    span = f"{value:+.3f} (95% CI {low:+.3f} to {high:+.3f})"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"accuracy difference transfer - scratch {span}: too few images to judge"
    if low > 0:
        return f"transfer learning is more accurate: difference {span}, larger than the noise"
    if high < 0:
        return f"training from scratch is more accurate: difference {span}, larger than the noise"
    return f"no accuracy difference larger than the noise: difference {span} includes 0"


def learning_checks(runs, labels, class_names, params, typed, presets):
    """Has each model learnt? Checked on the first seed's validation predictions at the threshold;
    returns the counts for the models' metrics entries and the advice (None when both learnt)."""
    _, truth, scores = first_seed_predictions(runs, labels, params["seed"])
    checks = {}
    for method, model in (("transfer", "The transfer head"), ("scratch", "The from-scratch model")):
        check = learning_check(truth, np.asarray(scores[method]) >= THRESHOLD, class_names)
        checks[method] = {**check, "not_learnt_message": not_learnt_sentence(check, model)}
    if not any(check["not_learnt"] for check in checks.values()):
        return checks, None
    # The preset changes the from-scratch model (and both models' class weights), so only its
    # settings can be the likely cause the advice names.
    effective = params if checks["scratch"]["not_learnt"] else None
    advice = try_instead(
        "transfer_vgg16.py", typed, presets["recommended"], params["preset"], effective
    )
    if checks["transfer"]["not_learnt"] and params["weights"] == "none":  # no preset helps them
        advice += (
            " The head's features come from a random VGG16 (--weights none): "
            "use --weights imagenet."
        )
    return checks, advice


def not_learnt_lines(metrics):
    """Bold sentences, one per model that has not learnt, then the advice; empty if both learnt."""
    sentences = [
        metrics[m]["not_learnt_message"]
        for m in ("transfer", "scratch")
        if metrics[m]["not_learnt"]
    ]
    if not sentences:
        return []
    return [f"**{sentence}.**" for sentence in sentences] + [metrics["try_instead"]]


def evaluation_facts(facts, data, params):
    """How the models were scored, for metrics.json."""
    return {
        "kind": facts["evaluation"],
        "class_names": facts["class_names"],
        "positive_class": facts["positive_name"],
        "threshold": THRESHOLD,
        "weights": params["weights"],
        "preprocess": params["preprocess"],
        "synthetic": facts["synthetic"],
        "feature_cache_hit": facts["cache_hit"],
        "feature_seconds": round(facts["extract_seconds"], 1),
    }


def log_hparams(run_dir, params, metrics):
    """Both models' parameters and pooled scores for TensorBoard's HParams table, one row each
    (`transfer/<run>/head`, `transfer/<run>/scratch`)."""
    from medlab.app import tensorboard_logs

    for model in ("transfer", "scratch"):
        name = TENSORBOARD_NAMES.get(model, model)
        tensorboard_logs.write_hparams(
            "transfer", run_dir.parent, run_dir, name, params, metrics[model], model=name
        )


TENSORBOARD_NAMES = {"transfer": "head"}  # the model that trains on the cached features


def tensorboard_dir(csv_path):
    """`history_transfer.csv` logs to TensorBoard in `tensorboard/head` beside it (and
    `history_scratch-fold2-seed0.csv` in `tensorboard/scratch-fold2-seed0`)."""
    from medlab.app import tensorboard_logs

    csv_path = Path(csv_path)
    model = csv_path.stem.removeprefix("history_")
    for old, new in TENSORBOARD_NAMES.items():
        if model.startswith(old):
            model = new + model.removeprefix(old)
    return tensorboard_logs.log_dir_for(csv_path.parent, model)


def write_predictions(run_dir, runs, paths, labels, class_names):
    from medlab import plots

    rows = [
        {
            "run": r["name"],
            "seed": r["seed"],
            "image": str(paths[i]),
            "label": class_names[labels[i]],
            "p_transfer": float(r["scores"]["transfer"][k]),
            "p_scratch": float(r["scores"]["scratch"][k]),
        }
        for r in runs
        for k, i in enumerate(r["val"])
    ]
    plots.write_csv(
        run_dir / "predictions.csv",
        rows,
        ["run", "seed", "image", "label", "p_transfer", "p_scratch"],
    )


def mean_history(paths):
    """Epoch-wise mean of several CSVLogger histories of equal length."""
    from medlab import plots

    histories = [plots.read_history(path) for path in paths]
    return {key: list(np.mean([h[key] for h in histories], axis=0)) for key in histories[0]}


def write_figures(run_dir, runs, truth, scores, metrics, class_names, positive):
    from medlab import plots
    from medlab.classification import transfer

    curves = {
        method: mean_history([run_dir / f"history_{method}{r['tag']}.csv" for r in runs])
        for method in ("transfer", "scratch")
    }
    label = "" if len(runs) == 1 else f" (mean of {len(runs)} runs)"
    plots.plot_curves(
        {f"{m}{label}": h for m, h in curves.items()},
        run_dir / "curves.png",
        metrics=("loss", "accuracy"),
    )
    transfer.plot_roc(truth, scores, metrics, run_dir / "roc.png", class_names[positive])
    transfer.plot_confusion(
        truth, scores, class_names, positive, run_dir / "confusion.png", THRESHOLD
    )


def save_models(run_dir, kept, backbone, params, class_names, positive):
    """The exported transfer model, the head and the scratch model; the two that classify images
    get a sidecar with the settings predict needs (`medlab.app.sidecars`)."""
    from medlab.classification import transfer

    full = transfer.export_full_model(
        backbone, kept["head"], params["preprocess"], params["image_size"]
    )
    models = {
        "transfer_vgg16": (full, 255.0, 3, params["image_size"]),
        "transfer_head": (kept["head"], None, None, None),
        "scratch_vgg16": (kept["scratch"], 1.0, params["scratch_channels"], params["scratch_size"]),
    }
    for name, (model, scale, channels, size) in models.items():
        save_model_atomic(model, run_dir / f"{name}.keras")
        if scale is not None:
            sidecars.write_sidecar(
                run_dir / f"{name}.keras",
                input_size=size,
                channels=channels,
                input_scale=scale,
                class_names=class_names,
                positive_class=class_names[positive],
                made_by="transfer_vgg16.py",
            )


def load_saved_model(path):
    """A model that classifies images and its sidecar (required: it holds the class names)."""
    needs = {"class_names": (None, None), "input_scale": (None, None)}
    return sidecars.load_model_and_settings(path, "transfer_vgg16.py", needs=needs)


def write_summary(run_dir, metrics, params, facts, parameter_table):
    """summary.md: warnings first, then the setup, the compared metrics, the figures and files."""
    report = Report(run_dir, f"Transfer learning vs training from scratch: {facts['data_name']}")
    if facts["synthetic"]:
        report.text("**Synthetic demo data**: the numbers say nothing about real images.")
    if params["weights"] == "none":
        report.text(
            "**Random backbone (`--weights none`)**: the features come from an untrained VGG16, "
            "so this run is a smoke test of the pipeline, not transfer learning."
        )
    report.text("\n".join(not_learnt_lines(metrics)))
    report.bullets(setup_lines(params, facts))
    report.heading("Validation metrics with 95% bootstrap confidence intervals")
    report.text(
        f"Scored on {metrics['scored_images']} validation predictions (first seed"
        f"{', pooled over folds' if params['folds'] >= 2 else ''}); intervals from "
        f"{params['bootstrap']} paired bootstrap resamples of the images."
    )
    report.table(interval_rows(metrics), ["model", *METRICS])
    report.text(f"**Verdict:** {metrics['difference']['verdict']}.")
    if len(metrics["runs"]) > 1:
        report.heading(f"Spread over {len(metrics['runs'])} runs (folds x seeds)")
        report.table(spread_rows(metrics), ["model", *METRICS])
    report.heading("Learning curves").figure(run_dir / "curves.png", "curves")
    report.heading("ROC and confusion matrices")
    report.figure(run_dir / "roc.png", "roc").figure(run_dir / "confusion.png", "confusion")
    size = f"{params['image_size']}x{params['image_size']}"
    report.heading("Files").bullets(
        [
            "`transfer_vgg16.keras`: backbone + head, classifies raw 0-255 RGB images "
            f"({size}); `transfer_head.keras`: the head alone",
            "`scratch_vgg16.keras`: the from-scratch model (inputs in [0, 1])",
            "`history_*.csv`, `predictions.csv`, `metrics.json`, `config.json`",
        ]
    )
    report.text("Predict: `python transfer_vgg16.py predict transfer_vgg16.keras IMAGE...`")
    report.heading("Parameters")
    report.table(*parameter_table)
    report.write()


def setup_lines(params, facts):
    """The data, training, backbone and evaluation of the run, one line each."""
    return [
        f"data: `{facts['data_dir']}`; {facts['describe']}",
        f"training: preset `{params['preset'] or 'none'}`, "
        f"class weights `{params['class_weight']}` "
        f"(head and from-scratch model); from-scratch model {describe_scratch(params)}",
        f"backbone: VGG16 without top, weights `{params['weights']}`, input "
        f"{params['image_size']}x{params['image_size']}x3, `{params['preprocess']}` preprocessing, "
        "features "
        f"{facts['feature_shape']}; extraction "
        f"{'skipped (cache hit)' if facts['cache_hit'] else 'ran'}",
        f"evaluation: {facts['evaluation']}; positive class **{facts['positive_name']}** "
        f"(sensitivity = its recall), threshold {THRESHOLD}; the final epoch's model is scored",
    ]


def describe_scratch(params):
    """The from-scratch model's settings in words, e.g. for the summary."""
    return (
        f"{params['scratch_size']}x{params['scratch_size']}x{params['scratch_channels']}, "
        f"{'centred' if params['scratch_centre'] else '[0, 1]'} pixels, "
        f"{'batch norm, ' if params['scratch_batch_norm'] else ''}{params['scratch_pooling']} top, "
        f"dropout {params['scratch_dropout']}, "
        f"lr {params['scratch_lr']:g} {params['scratch_lr_schedule']}, "
        f"{scratch_epochs(params)} epochs of batch {scratch_batch_size(params)}"
        f"{', augmented' if params['augment'] else ''}"
    )


def interval_rows(metrics):
    """One row per model and for the difference: value [95% interval] of every metric."""
    rows = []
    for method in ("transfer", "scratch", "difference"):
        entry = metrics[method]
        row = {"model": method if method != "difference" else "transfer - scratch"}
        for metric in METRICS:
            low, high = entry[f"val_{metric}_ci"]
            row[metric] = f"{entry[f'val_{metric}']:.3f} [{low:.3f}, {high:.3f}]"
        rows.append(row)
    return rows


def spread_rows(metrics):
    """One row per model and for the difference: mean +- standard deviation over the runs."""
    rows = []
    for method in ("transfer", "scratch", "difference"):
        entry = metrics[method]
        row = {"model": method}
        for metric in METRICS:
            row[metric] = f"{entry[f'val_{metric}_mean']:.3f} +- {entry[f'val_{metric}_std']:.3f}"
        rows.append(row)
    return rows


def predict_command(argv):
    """the class and its probability for each image, with a model a run saved"""
    parser = cli.Parser(
        prog="transfer_vgg16.py predict", description="classify images with a model saved by a run"
    )
    parser.add_argument(
        "model", help="transfer_vgg16.keras (or scratch_vgg16.keras) of a results folder"
    )
    parser.add_argument("images", nargs="+", help="image files (png, jpg, bmp, tif)")
    args = parser.parse_args(argv)
    runs.check_model_file(args.model, "transfer_vgg16.py")
    for path in args.images:
        if not Path(path).is_file():
            raise UserError(f"image {path} does not exist")
    quiet_tensorflow()  # only now: a mistyped path above answers without starting TensorFlow
    model, info = load_saved_model(Path(args.model))
    size = model.input_shape[1:3]
    for path in args.images:
        image = load_image(path, size, info["channels"]) * info["input_scale"]
        p_one = float(model.predict(image[None], verbose=0)[0, -1])
        label = int(p_one >= THRESHOLD)
        print(
            f"{path}: {info['class_names'][label]} "
            f"(probability {p_one if label else 1 - p_one:.3f})"
        )


def withhold_verdict(metrics):
    """No verdict on transfer vs scratch when either model has not learnt: the difference would
    measure a failed training (`unlearnt_verdict`, as every comparison)."""
    not_learnt = {
        method: (not_learnt_reason(metrics[method]), metrics["try_instead"])
        for method in ("transfer", "scratch")
        if metrics[method]["not_learnt"]
    }
    withheld = unlearnt_verdict("transfer", "scratch", not_learnt)
    metrics["difference"]["verdict"] = withheld or metrics["difference"]["verdict"]
