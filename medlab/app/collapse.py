"""Notice a classifier that has not learnt its task.

On imbalanced real sets a network often settles on the majority class: its accuracy then equals
the majority share in every epoch, which looks like a result, and its Grad-CAM maps explain
predictions that mean nothing. The check below looks at the predictions themselves, at the
model's threshold, so it catches that whatever the AUC says.
"""

import shlex
import sys

import numpy as np

from medlab.classification.metrics import binary_metrics

# "(Almost) all one class": the most predicted class takes at least this share of the images.
ONE_CLASS_SHARE = 0.95
# Balanced accuracy at or below this is near chance (0.5), whatever the spread of the predictions.
CHANCE_BALANCED_ACCURACY = 0.55


def learning_check(labels, predicted, class_names):
    """Counts of the predicted classes and whether the model has learnt the task.

    Args:
        labels, predicted: integer class labels (0/1) of the validation images and the model's
            predictions at its threshold.
        class_names: the names of labels 0 and 1.
    Returns:
        {"predicts_one_class", "not_learnt", "predicted_counts" {name: n}, "majority_prediction",
        "n_images", "balanced_accuracy"}: `predicts_one_class` when one class takes at least
        `ONE_CLASS_SHARE` of the predictions; `not_learnt` also when the balanced accuracy is at
        most `CHANCE_BALANCED_ACCURACY` (NaN, one class absent from the labels, counts as unknown).
    """
    labels, predicted = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    counts = np.bincount(predicted, minlength=2)
    top = int(counts.argmax())
    one_class = bool(counts[top] >= ONE_CLASS_SHARE * predicted.size)
    balanced = binary_metrics(labels, predicted.astype(float))["balanced_accuracy"]
    return {
        "predicts_one_class": one_class,
        "not_learnt": bool(one_class or balanced <= CHANCE_BALANCED_ACCURACY),
        "predicted_counts": {name: int(counts[i]) for i, name in enumerate(class_names)},
        "majority_prediction": class_names[top],
        "n_images": int(predicted.size),
        "balanced_accuracy": float(balanced),
    }


def not_learnt_sentence(check, model="the model"):
    """The plain sentence for summaries and the console; "" for a model that has learnt."""
    if not check["not_learnt"]:
        return ""
    return f"{model} {not_learnt_reason(check)}: it has not learnt the task"


def not_learnt_reason(check):
    """What a model that has not learnt does: "predicts cat for 30 of 30 validation images"."""
    if check["predicts_one_class"]:
        name = check["majority_prediction"]
        return (
            f"predicts {name} for {check['predicted_counts'][name]} of {check['n_images']} "
            "validation images"
        )
    return (
        f"has a balanced accuracy of {check['balanced_accuracy']:.3f} on {check['n_images']} "
        "validation images, near chance (0.5)"
    )


def command_line(script, typed):
    """`python script` with the flags `typed` maps to values (booleans become --name/--no-name)."""
    words = ["python", script]
    for name, value in typed.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


def suggested_command(script, typed, preset_keys, preset="recommended"):
    """The command with `--preset preset`: the flags the user typed, less those the preset sets
    (typed values override a preset, so they would undo it)."""
    kept = {k: v for k, v in typed.items() if k not in preset_keys and k != "preset"}
    return f"{command_line(script, kept)} --preset {preset}"


def likely_causes(effective, preset_values):
    """Why a run may not have learnt, judged against the preset that learnt on real data: too few
    epochs, or a learning rate a hundred times off.

    Returns (sentences, {parameter: the preset's value}) for the causes found.
    """
    sentences, fixes = [], {}
    for key, wanted in preset_values.items():
        if not isinstance(wanted, (int, float)) or isinstance(wanted, bool) or key not in effective:
            continue
        used = effective[key] or effective.get("epochs")  # scratch_epochs 0: as --epochs
        flag = "--" + key.replace("_", "-")
        if key.endswith("epochs") and wanted and used < wanted:
            sentences.append(
                f"{used} epoch(s) are too few to learn this ({flag} {wanted} in the preset)"
            )
            fixes[key] = wanted
        elif key.endswith("lr") and used and not wanted / 30 <= used <= 30 * wanted:
            side = "low" if used < wanted else "high"
            sentences.append(
                f"a learning rate of {used:g} is too {side} ({flag} {wanted:g} in the preset)"
            )
            fixes[key] = wanted
    return sentences, fixes


def try_instead(script, typed, preset_values, used_preset, effective=None, preset="recommended"):
    """What to do next after a run that has not learnt, as one paragraph: the likely cause and
    the user's own command with it fixed (every other flag kept), then the command with `preset`
    (which sets the values that `preset_values` lists), or more data if that preset already ran.

    Args:
        typed: the parameters typed on the command line, {name: value}.
        preset_values: the parameters `preset` sets, {name: value}.
        effective: the parameters the run used, to find the likely cause (none when omitted).
    """
    sentences, fixes = likely_causes(effective or {}, preset_values)
    advice = []
    if sentences:
        fixed = {**typed, **fixes}
        advice.append(
            f"Likely cause: {'; '.join(sentences)}. "
            f"Try your command with that changed: `{command_line(script, fixed)}`."
        )
    if used_preset == preset and not any(name in preset_values for name in typed):
        advice.append(
            f"The {preset} preset has not learnt this set either: check the labels, add images "
            "or train longer (--epochs)."
        )
        return " ".join(advice)
    overridden = [name for name in typed if name in preset_values]
    note = ""
    if overridden:
        flags = ", ".join("--" + name.replace("_", "-") for name in overridden)
        note = f" (it sets {flags} itself, so your values for them are left out)"
    command = suggested_command(script, typed, preset_values, preset)
    start = f"Or the {preset} preset: " if sentences else "Try instead: "
    advice.append(f"{start}`{command}`{note}.")
    return " ".join(advice)


def bold(text):
    """Bold on a terminal (ANSI), Markdown bold in a log file, so the sentence is never missed."""
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else f"**{text}**"


def print_bold(text):
    print(bold(text))
