"""Task 3's application (`cam_vgg16.py`): `start` turns the command line into a `CamRun` (flags,
the data found and checked, the memory check), which then loads the images, opens the run folder,
saves the trained model, scores and draws the Grad-CAM maps, and writes metrics.json, TensorBoard's
HParams and Images, summary.md and the console's last lines. `explain_command` is the `explain`
subcommand. The Keras side (model, maps, sanity checks, figures) is `medlab.classification.cam`."""

import json
from pathlib import Path

import cv2
import numpy as np

from medlab import quiet_tensorflow
from medlab.app import cli, resume, runs, sidecars
from medlab.app.classification.cam_parameters import DECLARED
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
from medlab.app.collapse import learning_check, not_learnt_sentence, print_bold, try_instead
from medlab.app.data import locate_data as find_data_folder
from medlab.app.outputs import write_output_names
from medlab.app.report import Report
from medlab.atomic import save_model_atomic
from medlab.checks import check_fits_in_memory, check_output_folder
from medlab.classification.data import load_arrays, load_class_split
from medlab.classification.markers import marker_outcome, marker_test
from medlab.classification.metrics import binary_metrics, positive_label, roc_auc
from medlab.errors import UserError
from medlab.images import decode, decode_for_display, load_image, to_channels, to_unit_range

# The built-in synthetic sets: enough training images for the fracture; for the shortcut as few as
# the course had, since with more the lab's network, once the marker has got it going, goes on to
# learn the faint cracks too.
SYNTHETIC_SET = {"n_train": 600, "n_val": 80, "size": 256, "seed": 0}
SHORTCUT_SET = {**SYNTHETIC_SET, "n_train": 200}
DATA_ROOT = Path("data")
DATASET_FOLDERS = {"bone": "Bone", "skin": "Skin"}  # the choices of --dataset
# A map cannot place its maximum more precisely than one cell of the explained layer; a pointing
# hit may therefore miss the region by up to half a cell (in input pixels).
POINTING_TOLERANCE_CELLS = 0.5
# Below this validation AUC the summary warns that the maps of an unlearnt model mean nothing.
MIN_USEFUL_AUC = 0.7
LOWER_ON_OUT_OF_MEMORY = "--batch-size, --size or --base"  # what to lower when memory runs out

# What `--preset lab` sets: the handout's network and training, as declared (docs/lab.md).
LAB = lab_preset(
    DECLARED,
    ("size", "channels", "base", "epochs", "lr", "batch_size", "rotation", "shift", "zoom", "flip")
    + ("colour_jitter", "colour_constancy", "centre", "batch_norm", "pooling", "dropout")
    + ("lr_schedule", "class_weight"),
)


def start(argv, *, parameters, presets, demo, shortcut_demo, commands, doc):
    """Everything before TensorFlow: the flags, the data (the synthetic set if there is none), the
    parameters with their sources (printed), the split and the memory check.

    Args:
        argv: the command line after the script's name.
        parameters: the script's PARAMETERS block; presets: its named settings (--preset).
        demo, shortcut_demo: the settings of the synthetic demo, plain and with --shortcut.
        commands: its subcommands; doc: its docstring (--help shows its first line, examples).
    Returns:
        The `CamRun` the pipeline trains, explains and reports with.
    """
    script = Script("cam", parameters, presets, demo, commands, doc, shortcut_demo)
    args, typed = command_line(script, argv)
    if args.resume:  # the run's own settings and data
        resolved, saved = resume.saved_run(args.resume, typed, args.preset, DECLARED)
        folder, demo_used = Path(saved["data_folder"]), saved["demo_settings"]
        args.preset = saved["preset"]
    else:
        folder, demo_used = locate_data(script, typed, args.preset)
        resolved = resolve(script, typed, demo_used, args.preset)
        print_parameters(script, resolved, args.preset)
    run = CamRun(script, args, typed, resolved, folder, demo_used)
    run.split = load_class_split(folder, seed=run.params["seed"])  # checked before TF starts
    print(run.split.describe())
    run.check_resumed_data()
    quiet_tensorflow()  # TensorFlow starts after this, once every input is checked
    check_memory(run.params, len(run.split.train_paths) + len(run.split.val_paths))
    return run


class CamRun(ClassifierRun):
    """Task 3's run: its images, run folder, model, maps, metrics and report."""

    def load_images(self):
        """(training images, validation images) at the model's size and channels."""
        return load_data(self.split, self.params)

    def open_folder(self):
        """The run folder (new, or --resume's), with config.json."""
        config = {
            "data_folder": str(self.data_folder),
            "synthetic": bool(self.demo),  # only the built-in demo sets come with demo settings
            "class_names": self.split.class_names,
            "demo_settings": self.demo or None,
            "preset": self.preset,
        }
        return self.open_run(self.data_folder.name.lower(), config)

    def callbacks(self):
        """TensorBoard's scalars, written each epoch."""
        from medlab.app import tensorboard_logs

        return [tensorboard_logs.epoch_logger(tensorboard_logs.log_dir_for(self.folder))]

    def save(self, model):
        """model.keras with its sidecar (the settings explain and predict read), curves.png."""
        from medlab import plots

        save_model_atomic(model, self.folder / "model.keras")
        write_model_settings(self.folder / "model.keras", self.params, self.split.class_names)
        self.curves = {"VGG16": plots.read_history(self.folder / "history.csv")}
        plots.plot_curves(self.curves, self.folder / "curves.png", metrics=("loss", "accuracy"))

    def explain(self, explainer, val_images):
        """Grad-CAM maps of the validation images, the scores and whether the model has learnt;
        draws cam_grid.png and class_mean_cam.png."""
        seen = explain_validation(explainer, val_images, self.split, self.params)
        names = self.split.class_names
        self.learnt = classification_metrics(
            seen, names, self.typed, self.params, self.preset, self.script.presets
        )
        warning = self.learnt["not_learnt_message"]
        draw_maps(self.folder, val_images, seen, names, self.params, warning)
        return seen

    def finish(self, seen, sanity):
        """sanity.json, randomisation.png, metrics.json, TensorBoard, summary.md, the console."""
        from medlab.app import tensorboard_logs
        from medlab.classification import cam

        run_dir, params = self.folder, self.params
        runs.write_json(run_dir / "sanity.json", sanity)
        cam.plot_randomisation(run_dir / "randomisation.png", sanity)
        names = self.split.class_names
        metrics = run_metrics(self.data_folder, self.demo, names, params, seen, self.learnt, sanity)
        runs.write_json(run_dir / "metrics.json", metrics)
        epochs = len(self.curves["VGG16"]["loss"])
        log_dir = tensorboard_logs.log_dir_for(run_dir)
        tensorboard_logs.write_png(log_dir, "Grad-CAM grid", run_dir / "cam_grid.png", epochs)
        tensorboard_logs.write_hparams(
            "cam", run_dir.parent, run_dir, self.data_folder.name, params, metrics
        )
        table = parameter_table(self.script, self.resolved, self.preset)
        write_summary(
            run_dir, params, table, metrics, sanity, data_note(self.data_folder, self.demo)
        )
        print_outcome(metrics)
        self.end()
        print(f"results in {run_dir} (summary.md)")
        return metrics


def locate_data(script, typed, preset):
    """(folder, demo settings): --data-dir, else data/Bone or data/Skin, else the synthetic set.

    --shortcut always takes the synthetic set: only the generator can burn in a marker that gives
    the class away."""
    shortcut = typed.get("shortcut", script.parameters["shortcut"])
    data_dir = typed.get("data_dir", script.parameters["data_dir"])
    if shortcut and data_dir:
        raise UserError(
            "--shortcut builds a synthetic demo set; it cannot be combined with --data-dir"
        )
    dataset = typed.get("dataset", script.parameters["dataset"])
    demo = script.shortcut_demo if shortcut else script.demo
    kind = "text marker tied to the class" if shortcut else "fracture / lesion"
    network = describe_network(resolve(script, typed, demo, preset).values)
    return find_data_folder(
        data_dir,
        None if shortcut else DATA_ROOT / DATASET_FOLDERS[dataset],
        lambda: make_demo_set(dataset, shortcut),
        f"{DATASET_FOLDERS[dataset]} ({kind}; {network})",
        demo,
        # The banner shows what the run will use: your edits, the preset and the flags win.
        banner_settings(script, typed, preset),
    )


def make_demo_set(dataset, shortcut):
    quiet_tensorflow()  # the generator's progress bar is Keras'
    from medlab.synthetic import skin_bone

    recipe = SHORTCUT_SET if shortcut else SYNTHETIC_SET
    return skin_bone.synthetic_class_set(dataset, shortcut=shortcut, **recipe)


def check_memory(params, images):
    """Refuse a size, batch or width the machine cannot train, before anything is loaded."""
    from medlab.classification import vgg

    needed = vgg.training_gb(
        params["size"],
        params["channels"],
        params["base"],
        params["batch_size"],
        params["batch_norm"],
        params["pooling"],
        images,
    )
    what = f"training at --size {params['size']} with --batch-size {params['batch_size']}"
    check_fits_in_memory(needed, what, LOWER_ON_OUT_OF_MEMORY)


def load_data(split, params):
    size = (params["size"], params["size"])
    train = load_arrays(split.train_paths, size, params["channels"], "training set")
    val = load_arrays(split.val_paths, size, params["channels"], "validation set")
    return train, val


def region_masks(paths, size, side_path):
    """Masks stored next to synthetic images (resized to the input), or None if any is missing."""
    masks = []
    for path in paths:
        mask_path = side_path(path)
        if not mask_path.is_file():
            return None
        mask = decode(mask_path)
        mask = mask if mask.ndim == 2 else mask[..., 0]
        masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 127)
    return np.stack(masks)


def marker_labels(paths, class_names):
    """The class each image's marker stands for (synthetic sets), as labels; None if unknown."""
    from medlab.synthetic import skin_bone

    found = skin_bone.marker_classes(paths)
    if any(name not in class_names for name in found):
        return None
    return np.array([class_names.index(name) for name in found])


def class_names_for(model_path, n_classes, settings=None):
    """Class names from the model's sidecar, else the run's config.json next to the model, else
    class0, class1, ..."""
    if settings is not None and len(settings["class_names"]) == n_classes:
        return settings["class_names"]
    config = Path(model_path).with_name("config.json")
    try:
        names = json.loads(config.read_text())["parameters"]["class_names"]
        if len(names) == n_classes:
            return names
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [f"class{i}" for i in range(n_classes)]


def explain_validation(explainer, images, split, params):
    """Grad-CAM maps of the validation images (also at the input's size), the model's answers, and
    the regions and marker classes the synthetic sets record (None on real data)."""
    from medlab.classification import cam
    from medlab.synthetic import skin_bone

    labels, size = split.val_labels, params["size"]
    maps, probabilities, explained = cam.explain_all(explainer, images, params["target_class"])
    predicted = probabilities.argmax(axis=1)
    return {
        "labels": labels,
        "maps": maps,
        "cams": cam.upsampled(maps, size),
        "probabilities": probabilities,
        "explained": explained,
        "predicted": predicted,
        "correct": predicted == labels,
        "layer": explainer.layer.name,
        "tolerance": cam.tolerance_pixels(explainer, size, POINTING_TOLERANCE_CELLS),
        "regions": region_masks(split.val_paths, size, skin_bone.region_mask_path),
        "markers": region_masks(split.val_paths, size, skin_bone.marker_mask_path),
        "marker_classes": marker_labels(split.val_paths, split.class_names),
    }


def classification_metrics(seen, names, typed, params, preset, presets):
    """Balanced accuracy, sensitivity and specificity at 0.5 (positive class: Mel / AFF, else
    label 1), and whether the model has learnt at all, with what to try instead."""
    labels, probabilities = seen["labels"], seen["probabilities"]
    positive = positive_label(names)
    scores = binary_metrics(labels == positive, probabilities[:, positive])
    check = learning_check(labels, probabilities.argmax(axis=1), names)
    return {
        "positive_class": names[positive],
        "val_balanced_accuracy": scores["balanced_accuracy"],
        "val_sensitivity": scores["sensitivity"],
        "val_specificity": scores["specificity"],
        **{
            k: check[k]
            for k in ("predicts_one_class", "not_learnt", "predicted_counts", "majority_prediction")
        },
        "not_learnt_message": not_learnt_sentence(check, "The model"),
        "try_instead": try_instead("cam_vgg16.py", typed, presets["recommended"], preset, params)
        if check["not_learnt"]
        else None,
        "class_weight": params["class_weight"],
        "preset": preset,
    }


def draw_maps(run_dir, images, seen, names, params, warning):
    """cam_grid.png (both classes, right and wrong) and class_mean_cam.png; `warning` (the model
    has not learnt) goes into their titles."""
    from medlab.classification import cam

    grid = cam.pick_grid_images(seen["labels"], seen["predicted"], params["grid_images"])
    cam.plot_cam_grid(
        run_dir / "cam_grid.png",
        images[grid],
        *(seen[key][grid] for key in ("cams", "labels", "predicted", "probabilities", "explained")),
        names,
        warning,
    )
    cam.plot_class_means(
        run_dir / "class_mean_cam.png",
        images,
        seen["cams"],
        seen["labels"],
        seen["correct"],
        names,
        warning,
    )


def run_metrics(folder, demo, names, params, seen, learnt, sanity):
    """metrics.json: the classifier's scores and the maps' faithfulness and sanity checks."""
    from medlab.classification import cam

    labels, correct, cams, tolerance = (seen[k] for k in ("labels", "correct", "cams", "tolerance"))
    regions, markers = seen["regions"], seen["markers"]
    region_scores = cam.faithfulness_by_class(cams, regions, labels, correct, tolerance, names)
    marker_scores = cam.faithfulness_by_class(cams, markers, labels, correct, tolerance, names)
    # The pointing game's images: the correctly classified ones that have a region.
    scored = correct if regions is None else correct & regions.any(axis=(1, 2))
    target = params["target_class"]
    return {
        "dataset_name": folder.name,
        "synthetic": bool(demo),
        "class_names": names,
        "n_val": int(len(labels)),
        "val_accuracy": float(correct.mean()),
        "val_auc": roc_auc(labels, seen["probabilities"][:, 1]),
        **learnt,
        "layer": seen["layer"],
        "cam_resolution": "x".join(map(str, seen["maps"].shape[1:])),
        "explained_class": "predicted" if target is None else names[target],
        "pointing_tolerance_px": tolerance,
        "pointing_game": region_scores["all"]["hit_rate"],
        "energy_inside_region": region_scores["all"]["energy_inside"],
        "region_masks": regions is not None,
        # On the pointing game's images, so that the two rates compare like with like.
        "marker_pointing_game": cam.faithfulness(
            cams[scored], None if markers is None else markers[scored], tolerance
        )["hit_rate"],
        "randomisation_correlation": sanity["randomisation_correlation"],
        "class_map_correlation": sanity["class_map_correlation"],
        "marker_test": marker_test(labels, correct, seen["marker_classes"]),
        "pointing_game_by_class": region_scores,
        "marker_pointing_game_by_class": marker_scores,
    }


def write_model_settings(model_path, params, class_names):
    """The sidecar that explain and transfer_vgg16.py predict read (`medlab.app.sidecars`)."""
    sidecars.write_sidecar(
        model_path,
        input_size=params["size"],
        channels=params["channels"],
        input_scale=1.0,
        class_names=class_names,
        positive_class=class_names[positive_label(class_names)],
        made_by="cam_vgg16.py",
    )


def fmt(value, spec=".3f"):
    return (
        "n/a"
        if value is None or (isinstance(value, float) and not np.isfinite(value))
        else format(value, spec)
    )


def describe_network(params):
    changes = [
        name
        for name, on in (
            ("colour constancy", params["colour_constancy"] and params["channels"] == 3),
            ("batch norm", params["batch_norm"]),
            (f"global {params['pooling']} pooling", params["pooling"] != "flatten"),
            (f"dropout {params['dropout']}", params["dropout"] != DECLARED["dropout"].default),
        )
        if on
    ]
    return "the lab's network" + (" with " + ", ".join(changes) if changes else "")


def rates_sentence(metrics, params):
    counts = ", ".join(f"{name} {n}" for name, n in metrics["predicted_counts"].items())
    return (
        f"Balanced accuracy **{fmt(metrics['val_balanced_accuracy'])}**, sensitivity "
        f"{fmt(metrics['val_sensitivity'])} and specificity {fmt(metrics['val_specificity'])} "
        f"({metrics['positive_class']} positive; predictions: {counts}). Preset: "
        f"{metrics['preset'] or 'none'}; class weights: {params['class_weight']}; training "
        f"augmentation: {describe_augmentation(params)}."
    )


def describe_augmentation(params):
    parts = [
        f"rotation {params['rotation']:g} degrees",
        f"shift {params['shift']:g}",
        f"zoom {params['zoom']:g}",
        "horizontal flip" if params["flip"] else "no flip",
        f"colour jitter {params['colour_jitter']:g}",
    ]
    return ", ".join(parts)


def maps_verdict(metrics, sanity):
    """Plain sentences: can the maps be trusted, and where do they point?"""
    warnings = []
    if metrics["not_learnt"]:
        warnings.append(
            f"**{metrics['not_learnt_message']}**; its maps explain nothing. "
            f"{metrics['try_instead']}"
        )
    elif not metrics["val_auc"] >= MIN_USEFUL_AUC:  # also catches NaN
        warnings.append(
            f"**The model has not learnt the task** (validation AUC {fmt(metrics['val_auc'])}): "
            "its maps explain nothing yet; train longer or on more data."
        )
    if not sanity["randomisation_passed"]:
        warnings.append(
            "**The maps fail the randomisation check**: they change little when the weights "
            "are random, so they show the image more than what the model learnt."
        )
    sentences = warnings + [where_maps_point(metrics), marker_sentence(metrics["marker_test"])]
    return " ".join(sentence for sentence in sentences if sentence)


def marker_sentence(test):
    if test is None:
        return ""
    agree, lies = test["marker_agrees"], test["marker_contradicts"]
    outcome = marker_outcome(test)
    if outcome == "untestable":
        return (
            f"The marker test needs images whose text marker matches the class and images whose "
            f"marker does not; this set has {agree['n']} and {lies['n']}."
        )
    numbers = (
        f"accuracy {fmt(lies['accuracy'])} on the {lies['n']} validation images whose text marker "
        f"belongs to the other class, {fmt(agree['accuracy'])} on the {agree['n']} others "
        f"(one-sided Fisher p = {test['p_value']:.2g})"
    )
    if outcome == "relies":
        return f"**The classifier relies on the text marker**: {numbers}."
    return f"No sign that the text marker decides the class: {numbers}."


def where_maps_point(metrics):
    """Region and marker hit rates, both over the correctly classified images that have a region."""
    region, marker = metrics["pointing_game"], metrics["marker_pointing_game"]
    if not metrics["region_masks"]:
        return "Where the evidence really is is unknown for these images: judge the maps by eye."
    if region is None:
        return "No correctly classified image has a known region, so there is no pointing game."
    if marker is not None and marker > region:
        return (
            f"**The maps go to the burned-in text marker** ({fmt(marker)} of the maxima) more "
            f"often than to the discriminative region ({fmt(region)}) on the correctly classified "
            "images that have one: the classifier uses a shortcut."
        )
    return (
        f"The maps point at the discriminative region in {fmt(region)} of the correctly "
        f"classified images that have one (at the text marker: {fmt(marker)})."
    )


def write_summary(run_dir, params, parameter_table, metrics, sanity, data_note):
    """summary.md: the scores, the verdict on the maps, the figures, the checks, the parameters."""
    report = Report(run_dir, f"Grad-CAM of the from-scratch VGG16 ({metrics['dataset_name']})")
    report.text(data_note)
    report.text(
        f"Validation accuracy **{fmt(metrics['val_accuracy'])}**, "
        f"ROC AUC **{fmt(metrics['val_auc'])}** "
        f"({metrics['n_val']} images, weights of the last epoch) of {describe_network(params)}. "
        f"Explained layer `{metrics['layer']}`, class: {metrics['explained_class']}."
    )
    report.text(rates_sentence(metrics, params))
    report.text(maps_verdict(metrics, sanity))
    report.figure(run_dir / "curves.png", "learning curves")
    report.heading("Where the model looks")
    report.figure(run_dir / "cam_grid.png", "Grad-CAM grid")
    report.figure(run_dir / "class_mean_cam.png", "mean map per class")
    add_faithfulness(report, metrics)
    add_sanity_checks(report, sanity)
    report.figure(run_dir / "randomisation.png", "randomisation")
    rows = [
        {"randomised down to": step["randomised_down_to"], "Spearman": step["spearman"]}
        for step in sanity["randomisation_cascade"]
    ]
    report.table(rows, ["randomised down to", "Spearman"], {"Spearman": ".3f"})
    report.heading("Parameters")
    report.table(*parameter_table)
    return report.write()


FAITHFULNESS_COLUMNS = {  # column: header (the two chance columns share theirs)
    "images": "images",
    "region": "region",
    "n": "n",
    "hit_rate": "hit rate",
    "chance_hit_rate": "chance",
    "energy_inside": "energy inside",
    "chance_energy": "chance",
}


def add_faithfulness(report, metrics):
    """The pointing game and the energy inside the region and the marker, per class."""
    report.heading("Faithfulness (correctly classified validation images with a known region)")
    if not metrics["region_masks"]:
        return report.text(
            "No region masks for these images (only the synthetic sets record where the "
            "evidence is), so the pointing game is not computed."
        )
    if metrics["pointing_game_by_class"]["all"]["n"] == 0:
        report.text("No correctly classified validation image has a region to score.")
    report.text(
        f"Pointing game: a hit when the map's maximum is inside the region, allowing "
        f"{metrics['pointing_tolerance_px']} px (half a cell of the "
        f"{metrics['cam_resolution']} map). Chance: a random point / a flat map."
    )
    tables = (
        (metrics["pointing_game_by_class"], "discriminative region"),
        (metrics["marker_pointing_game_by_class"], "text marker"),
    )
    rows = [
        {"images": group, "region": what, **row}
        for table, what in tables
        for group, row in table.items()
        if row["hit_rate"] is not None
    ]
    formats = dict.fromkeys(list(FAITHFULNESS_COLUMNS)[3:], ".3f")
    columns, headers = list(FAITHFULNESS_COLUMNS), list(FAITHFULNESS_COLUMNS.values())
    return report.table(rows, columns, formats, headers=headers)


def add_sanity_checks(report, sanity):
    """The randomisation and class-map checks in words (their figure and table follow)."""
    report.heading("Sanity checks")
    return report.bullets(
        [
            f"Model randomisation ({sanity['n_images']} images): rank correlation with the "
            f"trained maps is **{fmt(sanity['randomisation_correlation'])}** once every layer is "
            "re-initialised (1 = unchanged): "
            f"{'passed' if sanity['randomisation_passed'] else 'FAILED'} "
            "(maps that survive random weights show the image, not what was learnt). Highest "
            f"along the cascade: {fmt(sanity['randomisation_highest'])} after randomising down "
            f"to `{sanity['randomisation_highest_after']}`.",
            "Class 0 vs class 1 maps: mean rank correlation "
            f"**{fmt(sanity['class_map_correlation'])}**: "
            f"{'they differ' if sanity['class_maps_differ'] else 'TOO SIMILAR'} "
            f"({sanity['class_maps_all_zero']} of {2 * sanity['n_images']} maps are all zero: no "
            "positive evidence for that class anywhere, counted as correlation 0).",
        ]
    )


def data_note(folder, demo):
    if demo:
        return f"**SYNTHETIC DATA** ({folder}): the numbers say nothing about real images."
    return f"Data: {folder}."


def print_outcome(metrics):
    print(
        f"validation accuracy {fmt(metrics['val_accuracy'])}, AUC {fmt(metrics['val_auc'])}; "
        f"pointing game {fmt(metrics['pointing_game'])} "
        f"(marker {fmt(metrics['marker_pointing_game'])}); "
        f"randomisation correlation {fmt(metrics['randomisation_correlation'])}"
    )
    if metrics["not_learnt"]:
        print_bold(f"{metrics['not_learnt_message']}. {metrics['try_instead']}")


def explain_parser():
    parser = cli.Parser(
        prog="cam_vgg16.py explain", description="Grad-CAM overlays of images for a saved model"
    )
    parser.add_argument("model", help="a saved Keras model (.keras)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--layer", default=None, help=DECLARED["layer"].help)
    parser.add_argument(
        "--class", dest="target_class", type=int, default=None, help=DECLARED["target_class"].help
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: results/cam/<time>-explain)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the [0, 1] pixels by this before the model: 255 for models that take "
        "0-255 images (default: the model's sidecar .json, e.g. 255 for transfer_vgg16.py's "
        "full model, else 1)",
    )
    return parser


def explain_command(argv, out_root):
    """Grad-CAM overlays of images for a saved model, at each image's own size"""
    args = explain_parser().parse_args(argv)
    for image_path in args.images:
        decode(image_path)  # every image is checked before any folder is made
    check_output_folder(args.out or out_root, "--out")
    made_by = "cam_vgg16.py or another Keras script"
    runs.check_model_file(args.model, made_by)
    quiet_tensorflow()  # only now: a mistyped path above answers without starting TensorFlow
    from medlab import plots
    from medlab.classification import gradcam

    needs = {"input_scale": ("--scale", args.scale)}
    model, settings = sidecars.load_model_and_settings(
        args.model, made_by, compile=False, needs=needs
    )
    scale = sidecars.setting(settings, "input_scale", "--scale", args.scale, 1.0)
    explainer = gradcam.GradCAM(model, args.layer)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[3] not in (1, 3) or shape[1] is None:
        raise UserError(
            f"model {args.model} does not take fixed-size images (input {tuple(shape)})"
        )
    names = class_names_for(args.model, explainer.n_classes, settings)
    if args.target_class is not None and not 0 <= args.target_class < explainer.n_classes:
        raise UserError(
            f"--class {args.target_class}: model {args.model} has {explainer.n_classes} classes; "
            f"pass 0-{explainer.n_classes - 1}"
        )
    out = Path(args.out) if args.out else runs.new_run_dir(out_root, "explain")
    out.mkdir(parents=True, exist_ok=True)
    names_out = write_output_names(out, args.images, ("_cam.png",))
    for image_path, name in zip(args.images, names_out):
        model_input = load_image(image_path, (shape[1], shape[2]), shape[3])
        maps, probabilities, explained = explainer(model_input[None] * scale, args.target_class)
        # Shown at its own size (a very large image at a half, quarter or eighth of it).
        original = to_channels(to_unit_range(decode_for_display(image_path)), 3)
        cam_map = gradcam.upsample(maps[0], original.shape[:2])
        target = out / f"{name}_cam.png"
        predicted = int(probabilities[0].argmax())
        answer = (
            f"predicted {names[predicted]} (p={probabilities[0, predicted]:.3f}), "
            f"map of {names[int(explained[0])]}"
        )
        plots.save_titled_image(
            target, gradcam.overlay(original, cam_map), f"{Path(image_path).name}: {answer}"
        )
        print(f"{image_path}: {answer} -> {target}")
    runs.mark_complete(out)
    return out
