"""The Markdown summary of one invocation of `main_segmentation.py`: a table of every experiment,
Dice per image, the paired comparisons and each run's figures; and the sentences and tables that
the run writes for each experiment."""

import os

import unet
from medlab import plots
from medlab.app.collapse import command_line
from medlab.app.comparisons import (
    compare_runs,
    comparison_figure,
    comparison_rows,
    comparisons_markdown,
    select_comparisons,
    with_two_run_default,
)
from medlab.app.report import Report
from medlab.atomic import write_json

# Metrics of the paired comparisons: (per-image score, its words, higher is better).
COMPARED = (("dice", "Dice", True), ("hd95", "px HD95", False))


# Panels of the overlaid learning curves: every run logs these, whatever its loss.
CURVE_PANELS = {
    "loss": "loss (each run's own)",
    "dice_coefficient": "soft Dice",
    "binary_accuracy": "pixel accuracy",
}


def write_summary(summary_dir, runs, parameters, comparisons=(), seed=0, typed=None):
    """Compare the experiments of one invocation: summary.csv, summary.md, summary.json, a Dice bar
    chart, and the paired `comparisons` (comparisons.csv and one figure of overlaid curves each).

    Args:
        runs: {experiment: (metrics, per-image scores, run folder, parameters)}.
        parameters: (rows, columns) of the effective-parameter table, one column per experiment
            (`medlab.app.cli.parameter_rows`).
        typed: the flags the invocation was given, which the advice for a collapsed run keeps.
    """
    typed = typed or {}
    rows = [summary_row(summary_dir, name, run) for name, run in runs.items()]
    columns = list(dict.fromkeys(column for row in rows for column in row))
    plots.write_csv(summary_dir / "summary.csv", rows, columns)
    plots.plot_spread(
        {name: scores["dice"] for name, (_, scores, _, _) in runs.items()},
        summary_dir / "dice.png",
        "validation Dice per image",
        "final models, threshold 0.5",
    )
    folds = [c for c in ("folds_dice_mean", "folds_dice_std") if c in columns]
    compared, comparison_data = write_comparisons(summary_dir, runs, comparisons, seed, typed)
    write_json(
        summary_dir / "summary.json",
        {"runs": {name: run[0] for name, run in runs.items()}, **comparison_data},
    )
    report = Report(summary_dir, "U-Net lung segmentation: experiment summary")
    report.text(
        f"Data: `{data_note(runs, rows)}`.",
        scored_images_note(bool(folds)),
        "`best_val_dice` is the checkpoint with the best validation Dice; "
        "the epoch was chosen on the same images, so it is optimistic.",
    )
    for row in rows:
        if row["collapsed"]:
            message = collapse_message(
                row["experiment"],
                row["collapsed_to"],
                row["validation_images"],
                runs[row["experiment"]][3],
                typed,
            )
            report.bold(f"Collapsed: {message}")
    report.table(rows, summary_columns(folds), summary_formats(folds))
    report.figure(summary_dir / "dice.png", "Dice per image").text(compared.rstrip("\n"))
    for row in [] if folds else rows:
        report.heading(row["experiment"], level=3).text(
            f"![curves]({row['folder']}/curves.png)\n![overlays]({row['folder']}/overlays.png)"
        )
    report.heading("Parameters")
    report.text(
        "Each value with its source: lab (the default), demo (the synthetic demo's setting), "
        "edited (your PARAMETERS block), experiment or flag; an edit that an experiment or a flag "
        "replaced is named (docs/parameters.md)."
    )
    report.table(*parameters)
    report.write()


def summary_row(summary_dir, name, run):
    metrics, _, run_dir, p = run
    return {
        "experiment": name,
        "postprocess": p.get("postprocess", False),
        **{k: v for k, v in metrics.items() if k.startswith(("val_", "folds_"))},
        "best_val_dice": metrics["best_checkpoint"]["val_dice"],
        "epochs": metrics["epochs"],
        "train_seconds": metrics["train_seconds"],
        "collapsed": metrics.get("collapsed", False),
        "collapsed_to": collapse_kind(metrics),
        "validation_images": metrics["validation_images"],
        "folder": os.path.relpath(run_dir, summary_dir),
    }


def summary_columns(folds):
    scores = ["val_dice", "val_dice_std", *folds, "val_iou", "val_hd95", "val_precision"]
    return [
        "experiment",
        *scores,
        "val_recall",
        "best_val_dice",
        "epochs",
        "train_seconds",
    ]


def summary_formats(folds):
    columns = summary_columns(folds)
    return {c: ".3f" for c in columns if c.startswith(("val_", "best_", "folds_"))}


def data_note(runs, rows):
    """The data folder, and which experiments' scores are those of postprocessed masks."""
    note = runs[next(iter(runs))][3]["data_dir"]
    cleaned = [r["experiment"] for r in rows if r["postprocess"]]
    if cleaned:
        note += (
            f"`. {', '.join(cleaned)} ran with `--postprocess`: their scores are those of the "
            "cleaned masks; their metrics.json also holds the scores without it "
            "(`without_postprocess`"
        )
    return note


def scored_images_note(folds):
    if folds:
        return (
            "Cross-validated: every image was scored once, by the model of the fold that held it "
            "out; `val_*` are per-image means (and standard deviations) over all images pooled, "
            "`folds_dice_*` the mean and standard deviation of the folds' mean Dice. Final models "
            "at threshold 0.5."
        )
    return (
        "Scores are per-image means (and standard deviations) over the validation images, for the "
        "model after the last epoch at threshold 0.5."
    )


def collapse_kind(metrics):
    """`collapsed_to` of a run's metrics; runs written before it only knew the empty mask."""
    if "collapsed_to" in metrics:
        return metrics["collapsed_to"]
    return "empty mask" if metrics.get("collapsed") else None


# Fewer epochs than this are the likeliest reason a U-Net predicts one mask everywhere: it first
# learns the class balance (all background), then the lungs.
FEW_EPOCHS = 20
# A collapse at enough epochs: rerun at this fraction of the learning rate.
LOWER_LR = 1 / 3
SCRIPT = "main_segmentation.py"


def collapse_cause(kind, p):
    """Why a run with parameters `p` likely collapsed to `kind`, and the values that fix it."""
    if p["epochs"] < FEW_EPOCHS:
        return (
            f"after only {p['epochs']} epoch(s) the likely cause is a training too short",
            {"epochs": FEW_EPOCHS},
        )
    lower = {"lr": float(f"{p['lr'] * LOWER_LR:.2g}")}
    if kind == "empty mask" and "dice" in p["loss"]:
        return (
            "Dice loss does this when a high learning rate saturates the sigmoid (its gradient "
            "then vanishes, unlike BCE's)",
            lower,
        )
    if kind == "empty mask":
        return "the likely cause is a learning rate too high for this model", lower
    return (
        "check that the masks show the lungs white on black (inverted masks teach exactly "
        "this); otherwise the likely cause is a learning rate too high",
        lower,
    )


def collapse_advice(name, kind, p, typed):
    """(the likely cause, the command to run instead) of experiment `name` collapsed to `kind`."""
    cause, fixes = collapse_cause(kind, p)
    return cause, command_line(SCRIPT, {**typed, "experiments": name, **fixes})


def collapse_message(name, kind, count, p, typed=None):
    """The sentence that says what a collapsed experiment predicts, why, and what to run instead:
    the run's own command (`typed`, the flags it was given) with the cause fixed."""
    cause, command = collapse_advice(name, kind, p, typed or {})
    what = (
        f"predicts no lung in any of its {count} validation images: it has collapsed to the "
        "empty mask"
        if kind == "empty mask"
        else f"marks (almost) the whole image as lung in all {count} validation images: it has "
        "collapsed to the full mask"
    )
    return f"{name} {what} and has not learnt the task; {cause}. Rerun it: `{command}`"


def not_learnt_runs(runs, typed):
    """{experiment: (what it did, what to do)} of the collapsed runs, for the comparisons."""
    found = {}
    for name, (metrics, _, _, p) in runs.items():
        kind = collapse_kind(metrics)
        if kind:
            _, command = collapse_advice(name, kind, p, typed)
            found[name] = (f"collapsed to the {kind}", f"Rerun {name}: `{command}`.")
    return found


def differing_parameters(first, second):
    """'base 32 vs 8, lr 0.00015 vs 0.0007': every parameter in which two runs differ, so that a
    comparison says when more than its question differs between them."""
    return ", ".join(
        f"{name} {first[name]} vs {second.get(name)}"
        for name in first
        if first[name] != second.get(name)
    )


def write_per_image(path, names, scores, columns=None):
    """per_image.csv: each image's name and scores (`unet.METRICS` unless `columns` are given)."""
    columns = columns or unet.METRICS
    plots.write_csv(
        path,
        [{"image": n, **{m: scores[m][i] for m in columns}} for i, n in enumerate(names)],
        ["image", *columns],
    )


def write_comparisons(summary_dir, runs, comparisons, seed, typed):
    """The paired comparisons of the runs made: comparisons.csv, a figure each, their Markdown,
    and each verdict on the console; a pair with a collapsed run gets no verdict."""
    kept, notes = select_comparisons(with_two_run_default(comparisons, runs), runs)
    not_learnt = not_learnt_runs(runs, typed)
    results, skipped = compare_runs(
        kept, {name: run[1] for name, run in runs.items()}, COMPARED, seed, not_learnt=not_learnt
    )
    notes += skipped
    for result in results:
        first, second = result["first"], result["second"]
        result["figure"] = f"compare-{first}-vs-{second}.png"
        result["differs"] = differing_parameters(runs[first][3], runs[second][3])
        # A run that has not learnt says so in the figure's legend too.
        shown = {n: f"{n} (has not learnt)" if n in not_learnt else n for n in (first, second)}
        histories = {
            shown[name]: plots.read_history(runs[name][2] / "history.csv")
            for name in (first, second)
        }
        comparison_figure(
            histories,
            summary_dir / result["figure"],
            shown[first],
            shown[second],
            result["question"],
            CURVE_PANELS,
        )
        print(f"{first} vs {second} ({result['question']}): {result['verdict']}")
    rows = comparison_rows(results)
    if rows:
        plots.write_csv(summary_dir / "comparisons.csv", rows, list(rows[0]))
    return comparisons_markdown(results, notes), {"comparisons": results, "comparison_notes": notes}
