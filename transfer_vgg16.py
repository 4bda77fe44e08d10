"""Lab 4, Tasks 1-2: transfer learning with a frozen ImageNet VGG16 vs training from scratch.

    python transfer_vgg16.py --dataset skin  # data/Skin, or a synthetic demo set if absent
    python transfer_vgg16.py --data-dir PATH --weights PATH/vgg16_notop.h5 --folds 5
    python transfer_vgg16.py --dataset bone --preset recommended   # what learnt best on real data
    python transfer_vgg16.py predict MODEL.keras IMAGE...

VGG16's convolutional base turns every image into a 7x7x512 feature map once (cached on disk);
only a small head is trained on those features. The lab's from-scratch VGG16-style model is
trained on the same split for the same number of epochs, and both are scored on the same
validation images with bootstrap confidence intervals, so the comparison says whether the
difference is larger than the noise.

Precedence, lowest first: the lab defaults (declared with their help and ranges in
medlab/app/transfer_parameters.py), the demo settings (only on generated data), your edits in
PARAMETERS below (any value that differs from the lab default), --preset, and the flags typed
(`--help` lists them). So `"epochs": 10` edited below trains 10 epochs on the demo set as on real
data. The run prints each value with its source, and summary.md keeps that table
(docs/parameters.md).
"""

import time
from pathlib import Path

import numpy as np

from medlab import quiet_tensorflow
from medlab.app import cli, resume, runs, sidecars
from medlab.app.collapse import learning_check, not_learnt_sentence, print_bold, try_instead
from medlab.app.data import locate_data
from medlab.app.report import Report
from medlab.app.transfer_parameters import DECLARED
from medlab.atomic import save_model_atomic
from medlab.checks import check_fits_in_memory, check_writable_folder
from medlab.classification.data import load_arrays, load_class_split
from medlab.classification.metrics import binary_metrics, bootstrap_metrics, positive_label
from medlab.distribute import configure_precision, configure_scaling
from medlab.errors import UserError
from medlab.images import check_outside_data, load_image
from medlab.parameters import check_values

# These start TensorFlow (or matplotlib) on first use, so --help and typos answer at once.

# Your values; the lab's are the defaults, so an unchanged line is not an edit.
PARAMETERS = {
    # data
    "dataset": "skin",
    "data_dir": "",
    "val_fraction": 0.2,
    "folds": 0,
    "cache_dir": "data/cache/vgg16-features",
    # model: the frozen VGG16 and its head
    "weights": "imagenet",
    "preprocess": "vgg16",
    "image_size": 224,
    "dense_units": 128,
    "dropout": 0.5,
    # model: the from-scratch VGG16-style model
    "scratch_size": 128,
    "scratch_channels": 3,
    "scratch_base": 8,
    "scratch_centre": True,
    "scratch_batch_norm": False,
    "scratch_pooling": "flatten",
    "scratch_dropout": 0.4,
    # training
    "epochs": 150,
    "lr": 1e-5,
    "batch_size": 8,
    "scratch_lr": 1e-5,
    "scratch_lr_schedule": "constant",
    "scratch_epochs": 0,
    "scratch_batch_size": 0,
    "class_weight": "none",
    "augment": False,
    "seed": 0,
    "seeds": 1,
    # evaluation and output
    "positive": "auto",
    "bootstrap": 2000,
    "out": "results/transfer",
    # scaling (docs/scaling.md): batch_size above is per replica
    "strategy": "auto",
    "mixed_precision": "off",
    "jit": False,
}

# Without data, a generated set replaces data/Skin or data/Bone, and these settings replace the lab
# defaults (not your edits above, a preset or flags) so that the demo finishes in minutes on a
# laptop CPU.
SYNTHETIC_DEMO = {
    "image_size": 128,
    "epochs": 30,
    "lr": 1e-4,
    "scratch_size": 64,
    "scratch_lr": 1e-4,
}
# Named settings for the from-scratch model and the class weights (--preset; over the demo
# settings and your edits, under the flags), as in cam_vgg16.py: "lab" is the handout's Lab 2
# model exactly ([0, 1] pixels without the centring layer, one channel, lr 1e-5, the lab's
# epochs), "recommended" what learnt best on real data (docs/transfer.md, "Presets").
PRESETS = {
    "lab": {
        "scratch_size": 128,
        "scratch_channels": 1,
        "scratch_base": 8,
        "scratch_lr": 1e-5,
        "scratch_centre": False,
        "scratch_batch_norm": False,
        "scratch_pooling": "flatten",
        "scratch_dropout": 0.4,
        "scratch_lr_schedule": "constant",
        "scratch_epochs": 0,
        "scratch_batch_size": 0,
        "augment": False,
        "class_weight": "none",
    },
    "recommended": {
        "scratch_lr": 1e-3,
        "scratch_batch_norm": True,
        "scratch_pooling": "avg",
        "scratch_dropout": 0.0,
        "scratch_lr_schedule": "cosine",
        "scratch_epochs": 40,
        "scratch_batch_size": 32,
        "augment": True,
        "class_weight": "balanced",
    },
}

DATASETS = {"skin": "data/Skin", "bone": "data/Bone"}  # the choices of --dataset
# What to lower when a run runs out of memory.
LOWER_ON_OUT_OF_MEMORY = (
    "--batch-size, --image-size, --scratch-size, --scratch-batch-size, --scratch-base or "
    "--dense-units"
)
METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
THRESHOLD = 0.5

PRESET_HELP = (
    "settings of the from-scratch model and the class weights: lab (the handout's Lab 2 model "
    "exactly) or recommended (docs/transfer.md)"
)


# ----------------------------------------------------------------------------- the pipeline


def train_command(argv):
    """Tasks 1-2: a head on frozen VGG16 features vs the from-scratch model, on the same images."""
    args = parse_train_flags(argv)
    typed = cli.typed_flags(args, DECLARED)
    # 1. Locate and split the data (the synthetic demo set, with its settings, when there is none);
    # the parameters are checked and printed with each value's source.
    if args.resume:  # the run's own settings and data
        resolved, saved = resume.saved_run(args.resume, typed, args.preset, DECLARED)
        data_dir, demo, args.preset = Path(saved["data_dir"]), saved["synthetic"], saved["preset"]
    else:
        data_dir, demo = find_data(typed, args.preset)
        resolved = resolve_parameters(typed, demo, args.preset)
    p = {**resolved.values, "preset": args.preset}
    check_writable_folder(p["cache_dir"], "--cache-dir")  # before the slow extraction, not after
    split = load_class_split(data_dir, p["val_fraction"], p["seed"])
    check_outside_data(p["out"], "--out")  # now that the data is known, before the extraction
    print(split.describe())
    positive = positive_class(split.class_names, p["positive"])
    # 2. The frozen VGG16 backbone and its (cached) features. TensorFlow starts only now, so that
    # a typo answers at once. The distribution strategy comes before TensorFlow runs anything (the
    # multi-worker one needs that); the precision policy only after the features are cached, so it
    # never reaches the backbone.
    quiet_tensorflow()
    scaling = configure_scaling(p["strategy"], jit=p["jit"], batch_size=p["batch_size"])
    check_memory(p, len(split.train_paths) + len(split.val_paths))
    runs.set_seed(p["seed"])  # a random backbone (--weights none) is then the same in every run
    backbone = load_backbone(p)
    data = prepare_data(split, backbone, p)  # before the run folder: a corrupt image stops here
    facts = run_facts(data_dir, bool(demo), split, positive, data, p)
    run_dir = start_run(p, facts, resolved, args.resume)
    configure_precision(p["mixed_precision"])
    # 3. Train the head and the from-scratch model on every (seed, fold).
    trained, kept = run_evaluations(data, p, run_dir, scaling)
    # 4. Score both with bootstrap intervals, compare them, and check that each has learnt.
    metrics, (truth, scores) = summarise(trained, data["labels"], positive, p)
    checks, metrics["try_instead"] = learning_checks(
        trained, data["labels"], split.class_names, p, typed
    )
    for method, check in checks.items():
        metrics[method].update(check)
    metrics["evaluation"] = evaluation_facts(facts, data, p)
    # 5. Report: metrics, TensorBoard, predictions, figures, models and summary.md.
    runs.write_json(run_dir / "metrics.json", metrics)
    log_hparams(run_dir, p, metrics)
    write_predictions(run_dir, trained, data["paths"], data["labels"], split.class_names)
    write_figures(run_dir, trained, truth, scores, metrics, split.class_names, positive)
    save_models(run_dir, kept, backbone, p, split.class_names, positive)
    write_summary(run_dir, metrics, p, facts, resolved)
    print(f"\n{metrics['difference']['verdict']}")
    for line in not_learnt_lines(metrics):
        print_bold(line.strip("*"))
    resume.finish(run_dir)
    print(f"summary: {run_dir / 'summary.md'}")
    return run_dir


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


def main(argv=None):
    return runs.run_commands(
        argv,
        {"train": train_command, **COMMANDS},
        lower=LOWER_ON_OUT_OF_MEMORY,
    )


COMMANDS = {"predict": predict_command}


# ----------------------------------------------------------------------------- flags and data


def parse_train_flags(argv):
    parser = cli.Parser(
        prog="transfer_vgg16.py",
        description=__doc__.split("\n")[0],
        epilog=cli.epilog("transfer_vgg16.py", __doc__, COMMANDS, "preset < flags typed"),
    )
    cli.add_parameter_flags(parser, DECLARED, SYNTHETIC_DEMO)
    resume.add_resume_flag(cli.add_preset_flag(parser, PRESETS, PRESET_HELP))
    return parser.parse_args(argv)


def resolve_parameters(typed, demo, preset):
    """The lab's defaults < the demo settings (synthetic data only) < your edits in PARAMETERS <
    the preset < the flags typed; checked, printed with each value's source."""
    resolved = cli.resolve(DECLARED, PARAMETERS, typed, demo, PRESETS.get(preset), where=WHERE)
    check_parameters(resolved.values)
    cli.print_parameters({"value (source)": resolved}, list(DECLARED))
    return resolved


WHERE = "PARAMETERS in transfer_vgg16.py"


def find_data(typed, preset=None):
    """The data folder and the demo settings that apply (only for the synthetic set)."""
    chosen = {**PARAMETERS, **typed}
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
        SYNTHETIC_DEMO,
        # The banner shows what the run will use: your edits, the preset and the flags win.
        {**cli.edits(PARAMETERS, DECLARED, WHERE), **PRESETS.get(preset, {}), **typed},
    )


def synthetic_set(dataset):
    quiet_tensorflow()  # before the set's Keras progress bar starts TensorFlow
    from medlab.synthetic import skin_bone

    return skin_bone.synthetic_class_set(dataset)


def check_parameters(p):
    """Every setting against its declaration, and the combinations the declarations cannot say."""
    check_values(p, DECLARED)
    if p["folds"] == 1:
        raise UserError("--folds 1 is not cross-validation; use 0 (the split) or K >= 2")
    if p["scratch_size"] % 32:
        raise UserError(
            f"--scratch-size {p['scratch_size']} must be a multiple of 32 (five poolings)"
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


def check_memory(p, images):
    """Refuse, before the backbone is built, settings the machine cannot train: the from-scratch
    model with its images, and the head with the features of every image."""
    from medlab.classification import vgg

    features = (p["image_size"] // 32) ** 2 * 512
    head_gb = (images * features * 4 + features * p["dense_units"] * 16) / 2**30
    # Extracting the features: batches of 16 images (`transfer.run_backbone`), the first block's
    # two 64-channel outputs at full size alive at once, in float32.
    head_gb += 16 * 2 * p["image_size"] ** 2 * 64 * 4 / 2**30
    scratch_gb = vgg.training_gb(
        p["scratch_size"],
        p["scratch_channels"],
        p["scratch_base"],
        scratch_batch_size(p),
        p["scratch_batch_norm"],
        p["scratch_pooling"],
        images,
    )
    what = (
        f"training at --image-size {p['image_size']} and --scratch-size {p['scratch_size']} "
        f"with --dense-units {p['dense_units']}"
    )
    check_fits_in_memory(head_gb + scratch_gb, what, LOWER_ON_OUT_OF_MEMORY)


def load_backbone(p):
    """The frozen VGG16 base; without internet, the error names the offline alternatives."""
    from medlab.classification import transfer

    check_weights(p["weights"])
    try:
        return transfer.load_backbone(p["weights"], p["image_size"])
    except transfer.WeightsUnavailable as error:
        raise UserError(
            f"{error} or pass --weights PATH (a local VGG16 notop weights file), or --weights "
            "none for a smoke test"
        ) from None


def prepare_data(split, backbone, p):
    """Features and scratch-model images of train + validation, with their labels, in one order."""
    from medlab.classification import transfer

    paths = list(split.train_paths) + list(split.val_paths)
    labels = np.concatenate([split.train_labels, split.val_labels]).astype(np.int32)
    start = time.perf_counter()
    features, cache_hit = transfer.cached_features(
        backbone,
        paths,
        p["image_size"],
        p["preprocess"],
        p["cache_dir"],
        transfer.weights_fingerprint(backbone),
    )
    images = load_arrays(
        paths,
        (p["scratch_size"],) * 2,
        p["scratch_channels"],
        "loading images for the from-scratch model",
    )
    return {
        "paths": paths,
        "labels": labels,
        "features": features,
        "images": images,
        "cache_hit": cache_hit,
        "extract_seconds": time.perf_counter() - start,
        "evaluations": plan_evaluations(split, p["folds"], p["seed"]),
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


def run_facts(data_dir, synthetic, split, positive, data, p):
    """What config.json, metrics.json and summary.md say about the data and the evaluation."""
    evaluation = (
        f"stratified {p['folds']}-fold cross-validation on train+validation"
        if p["folds"] >= 2
        else f"the {split.layout}-layout validation set"
    ) + f", {p['seeds']} seed(s)"
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


def start_run(p, facts, resolved, resumed=None):
    """A new run folder with the run's config.json, each value's source included (or the
    `resumed` one, reopened)."""
    config = {
        **p,
        "data_dir": str(facts["data_dir"]),
        "synthetic": facts["synthetic"],
        "class_names": facts["class_names"],
        "positive_class": facts["positive_name"],
        "sources": {name: resolved.source(name) for name in DECLARED},
    }
    name = facts["data_name"].lower()
    run_dir = resume.open_run(resumed, p["out"], name, "transfer_vgg16.py", config)
    print(f"writing results to {run_dir}")
    return run_dir


# ----------------------------------------------------------------------------- training


def run_evaluations(data, p, run_dir, scaling):
    """Train both models for every (seed, fold); keep the first run's models for export."""
    trained, kept = [], {}
    for repeat in range(p["seeds"]):
        seed = p["seed"] + repeat
        for name, train, val in data["evaluations"]:
            tag = "" if not trained else f"-{name}-seed{seed}"
            print(f"\n=== {name}, seed {seed}: {len(train)} training, {len(val)} validation images")
            runs.set_seed(seed)
            head, transfer_scores, head_seconds = train_transfer(
                data["features"],
                data["labels"],
                train,
                val,
                p,
                seed,
                run_dir / f"history_transfer{tag}.csv",
                scaling,
            )
            runs.set_seed(seed)
            scratch, scratch_scores, scratch_seconds = train_scratch(
                data["images"],
                data["labels"],
                train,
                val,
                p,
                seed,
                run_dir / f"history_scratch{tag}.csv",
                scaling,
            )
            if not trained:
                kept = {"head": head, "scratch": scratch}
            trained.append(
                {
                    "name": name,
                    "seed": seed,
                    "tag": tag,
                    "val": val,
                    "scores": {"transfer": transfer_scores, "scratch": scratch_scores},
                    "seconds": {"transfer": head_seconds, "scratch": scratch_seconds},
                }
            )
    return trained, kept


def train_transfer(features, labels, train, val, p, seed, csv_path, scaling):
    """A fresh head trained on cached features; returns it with validation scores and seconds."""
    from medlab.app import tensorboard_logs
    from medlab.classification import train as training
    from medlab.classification import transfer

    with scaling.scope():
        head = training.compile_classifier(
            transfer.build_head(features.shape[1:], p["dense_units"], p["dropout"]),
            p["lr"],
            jit_compile=scaling.jit,
        )
    print(f"training the transfer head on the cached VGG16 features ({p['epochs']} epochs)")
    batch_size = scaling.global_batch(p["batch_size"])
    targets = training.targets_for(head, labels)
    seconds = training.fit_logged(
        head,
        training.image_dataset(
            features[train], targets[train], batch_size, shuffle=True, seed=seed
        ),
        training.image_dataset(features[val], targets[val], batch_size),
        p["epochs"],
        csv_path,
        class_weight=training.class_weights(labels[train], p["class_weight"]),
        callbacks=[tensorboard_logs.epoch_logger(tensorboard_dir(csv_path))],
    )
    return head, training.class_one_scores(head, features[val]), seconds


def train_scratch(images, labels, train, val, p, seed, csv_path, scaling):
    """A fresh from-scratch model trained on the images; returns it, its scores and seconds."""
    from medlab import schedules
    from medlab.app import tensorboard_logs
    from medlab.classification import train as training

    batch_size = scaling.global_batch(scratch_batch_size(p))
    steps = scratch_epochs(p) * int(np.ceil(len(train) / batch_size))
    lr = schedules.learning_rate(p["scratch_lr"], p["scratch_lr_schedule"], steps)
    with scaling.scope():
        model = training.compile_classifier(build_scratch(p), lr, jit_compile=scaling.jit)
    targets = training.targets_for(model, labels)
    train_data = training.image_dataset(
        images[train], targets[train], batch_size, shuffle=True, augment=p["augment"], seed=seed
    )
    val_data = training.image_dataset(images[val], targets[val], batch_size)
    print(f"training the from-scratch model on the images ({scratch_epochs(p)} epochs)")
    seconds = training.fit_logged(
        model,
        train_data,
        val_data,
        scratch_epochs(p),
        csv_path,
        class_weight=training.class_weights(labels[train], p["class_weight"]),
        callbacks=[tensorboard_logs.epoch_logger(tensorboard_dir(csv_path))],
        lr_flag="--scratch-lr",
    )
    return model, training.class_one_scores(model, images[val]), seconds


def build_scratch(p):
    """The lab's VGG16-style model, fed pixels centred on 0 (`vgg.CENTRING`)."""
    from medlab.classification import vgg

    return vgg.build_vgg16_style(
        (p["scratch_size"], p["scratch_size"], p["scratch_channels"]),
        base=p["scratch_base"],
        n_classes=1,
        centre=p["scratch_centre"],
        name="scratch_vgg16",
        batch_norm=p["scratch_batch_norm"],
        pooling=p["scratch_pooling"],
        dropout=p["scratch_dropout"],
    )


def scratch_epochs(p):
    return p["scratch_epochs"] or p["epochs"]


def scratch_batch_size(p):
    return p["scratch_batch_size"] or p["batch_size"]


# ----------------------------------------------------------------------------- metrics


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


def summarise(runs, labels, positive, p):
    """metrics.json: intervals on the pooled first-seed predictions, spread over all runs."""
    index, truth, scores = first_seed_predictions(runs, labels, p["seed"])
    truth_pos, oriented_scores = None, {}
    for method, values in scores.items():
        truth_pos, oriented_scores[method] = oriented(truth, values, positive)
    intervals = bootstrap_metrics(
        truth_pos, oriented_scores, p["bootstrap"], p["seed"], 0.95, THRESHOLD
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
    difference["verdict"] = verdict(difference)
    return difference


def verdict(difference):
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


def learning_checks(runs, labels, class_names, p, typed):
    """Has each model learnt? Checked on the first seed's validation predictions at the threshold;
    returns the counts for the models' metrics entries and the advice (None when both learnt)."""
    _, truth, scores = first_seed_predictions(runs, labels, p["seed"])
    checks = {}
    for method, model in (("transfer", "The transfer head"), ("scratch", "The from-scratch model")):
        check = learning_check(truth, np.asarray(scores[method]) >= THRESHOLD, class_names)
        checks[method] = {**check, "not_learnt_message": not_learnt_sentence(check, model)}
    if not any(check["not_learnt"] for check in checks.values()):
        return checks, None
    # The preset changes the from-scratch model (and both models' class weights), so only its
    # settings can be the likely cause the advice names.
    effective = p if checks["scratch"]["not_learnt"] else None
    advice = try_instead("transfer_vgg16.py", typed, PRESETS["recommended"], p["preset"], effective)
    if checks["transfer"]["not_learnt"] and p["weights"] == "none":  # no preset helps them
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


def evaluation_facts(facts, data, p):
    """How the models were scored, for metrics.json."""
    return {
        "kind": facts["evaluation"],
        "class_names": facts["class_names"],
        "positive_class": facts["positive_name"],
        "threshold": THRESHOLD,
        "weights": p["weights"],
        "preprocess": p["preprocess"],
        "synthetic": facts["synthetic"],
        "feature_cache_hit": facts["cache_hit"],
        "feature_seconds": round(facts["extract_seconds"], 1),
    }


# ----------------------------------------------------------------------------- outputs


def log_hparams(run_dir, p, metrics):
    """Both models' parameters and pooled scores for TensorBoard's HParams table, one row each
    (`transfer/<run>/head`, `transfer/<run>/scratch`)."""
    from medlab.app import tensorboard_logs

    for model in ("transfer", "scratch"):
        name = TENSORBOARD_NAMES.get(model, model)
        tensorboard_logs.write_hparams(
            "transfer", run_dir.parent, run_dir, name, p, metrics[model], model=name
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

    histories = [plots.read_history(p) for p in paths]
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


def save_models(run_dir, kept, backbone, p, class_names, positive):
    """The exported transfer model, the head and the scratch model; the two that classify images
    get a sidecar with the settings predict needs (`medlab.app.sidecars`)."""
    from medlab.classification import transfer

    full = transfer.export_full_model(backbone, kept["head"], p["preprocess"], p["image_size"])
    models = {
        "transfer_vgg16": (full, 255.0, 3, p["image_size"]),
        "transfer_head": (kept["head"], None, None, None),
        "scratch_vgg16": (kept["scratch"], 1.0, p["scratch_channels"], p["scratch_size"]),
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


# ----------------------------------------------------------------------------- summary.md


def write_summary(run_dir, metrics, p, facts, resolved):
    """summary.md: warnings first, then the setup, the compared metrics, the figures and files."""
    report = Report(run_dir, f"Transfer learning vs training from scratch: {facts['data_name']}")
    if facts["synthetic"]:
        report.text("**Synthetic demo data**: the numbers say nothing about real images.")
    if p["weights"] == "none":
        report.text(
            "**Random backbone (`--weights none`)**: the features come from an untrained VGG16, "
            "so this run is a smoke test of the pipeline, not transfer learning."
        )
    report.text("\n".join(not_learnt_lines(metrics)))
    report.bullets(setup_lines(p, facts))
    report.heading("Validation metrics with 95% bootstrap confidence intervals")
    report.text(
        f"Scored on {metrics['scored_images']} validation predictions (first seed"
        f"{', pooled over folds' if p['folds'] >= 2 else ''}); intervals from "
        f"{p['bootstrap']} paired bootstrap resamples of the images."
    )
    report.table(interval_rows(metrics), ["model", *METRICS])
    report.text(f"**Verdict:** {metrics['difference']['verdict']}.")
    if len(metrics["runs"]) > 1:
        report.heading(f"Spread over {len(metrics['runs'])} runs (folds x seeds)")
        report.table(spread_rows(metrics), ["model", *METRICS])
    report.heading("Learning curves").figure(run_dir / "curves.png", "curves")
    report.heading("ROC and confusion matrices")
    report.figure(run_dir / "roc.png", "roc").figure(run_dir / "confusion.png", "confusion")
    size = f"{p['image_size']}x{p['image_size']}"
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
    report.table(*cli.parameter_rows({"value (source)": resolved}, list(DECLARED)))
    report.write()


def setup_lines(p, facts):
    """The data, training, backbone and evaluation of the run, one line each."""
    return [
        f"data: `{facts['data_dir']}`; {facts['describe']}",
        f"training: preset `{p['preset'] or 'none'}`, class weights `{p['class_weight']}` "
        f"(head and from-scratch model); from-scratch model {describe_scratch(p)}",
        f"backbone: VGG16 without top, weights `{p['weights']}`, input "
        f"{p['image_size']}x{p['image_size']}x3, `{p['preprocess']}` preprocessing, features "
        f"{facts['feature_shape']}; extraction "
        f"{'skipped (cache hit)' if facts['cache_hit'] else 'ran'}",
        f"evaluation: {facts['evaluation']}; positive class **{facts['positive_name']}** "
        f"(sensitivity = its recall), threshold {THRESHOLD}; the final epoch's model is scored",
    ]


def describe_scratch(p):
    """The from-scratch model's settings in words, e.g. for the summary."""
    return (
        f"{p['scratch_size']}x{p['scratch_size']}x{p['scratch_channels']}, "
        f"{'centred' if p['scratch_centre'] else '[0, 1]'} pixels, "
        f"{'batch norm, ' if p['scratch_batch_norm'] else ''}{p['scratch_pooling']} top, dropout "
        f"{p['scratch_dropout']}, lr {p['scratch_lr']:g} {p['scratch_lr_schedule']}, "
        f"{scratch_epochs(p)} epochs of batch {scratch_batch_size(p)}"
        f"{', augmented' if p['augment'] else ''}"
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


if __name__ == "__main__":
    main()
