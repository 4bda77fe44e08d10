"""Binary classification metrics on label and score arrays (class 1 = positive)."""

import numpy as np

POSITIVE_NAMES = ("Mel", "AFF")  # the diseases of the lab's two sets


def roc_auc(labels, scores):
    """Area under the ROC curve by the rank-sum formula (ties count one half); NaN for one class."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    positives, negatives = scores[labels], scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (positives.size * negatives.size))


def confusion_counts(labels, predicted):
    """(tn, fp, fn, tp) of boolean-like label and prediction arrays, class 1 = positive."""
    labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    return (
        int(np.sum(~labels & ~predicted)),
        int(np.sum(~labels & predicted)),
        int(np.sum(labels & ~predicted)),
        int(np.sum(labels & predicted)),
    )


def safe_ratio(numerator, denominator):
    return numerator / denominator if denominator else float("nan")


def binary_metrics(labels, scores, threshold=0.5):
    """Accuracy, balanced accuracy, AUC, sensitivity and specificity of scores for class 1.

    A score >= `threshold` predicts class 1. Sensitivity is the recall of class 1, specificity
    the recall of class 0; a rate whose class is absent is NaN rather than a made-up number.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    tn, fp, fn, tp = confusion_counts(labels, scores >= threshold)
    sensitivity, specificity = safe_ratio(tp, tp + fn), safe_ratio(tn, tn + fp)
    return {
        "accuracy": safe_ratio(tp + tn, labels.size),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "auc": roc_auc(labels, scores),
        "sensitivity": sensitivity,
        "specificity": specificity,
    }


def positive_label(class_names, positive="auto"):
    """The label counted as positive for sensitivity: `positive` by name, or for "auto" the
    disease of the lab's sets (Mel, AFF) when present, else label 1."""
    if positive == "auto":
        return next((i for i, n in enumerate(class_names) if n in POSITIVE_NAMES), 1)
    return class_names.index(positive)


def roc_curve(labels, scores):
    """False- and true-positive rates for every threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    thresholds = np.unique(scores)[::-1]
    tpr = [np.mean(scores[labels] >= t) if labels.any() else np.nan for t in thresholds]
    fpr = [np.mean(scores[~labels] >= t) if (~labels).any() else np.nan for t in thresholds]
    return np.array([0.0, *fpr, 1.0]), np.array([0.0, *tpr, 1.0])


def bootstrap_metrics(labels, scores_by_model, n_resamples=2000, seed=0, level=0.95, threshold=0.5):
    """Percentile bootstrap intervals of `binary_metrics` for each model and for their difference.

    All models are scored on the same resampled images in each round (a paired bootstrap), so the
    interval of a difference reflects the models' disagreement, not the luck of the image draw.
    Returns {model: {metric: [low, high]}} and, with exactly two models, "difference" (first
    minus second). Rounds where a metric is undefined (one class drawn) are skipped.
    """
    labels = np.asarray(labels)
    names = list(scores_by_model)
    draws = {name: [] for name in names}
    for index in paired_resamples(labels.size, n_resamples, seed):
        for name in names:
            draws[name].append(
                binary_metrics(labels[index], np.asarray(scores_by_model[name])[index], threshold)
            )
    keys = list(draws[names[0]][0])
    table = {name: {k: np.array([d[k] for d in draws[name]]) for k in keys} for name in names}
    if len(names) == 2:
        table["difference"] = {k: table[names[0]][k] - table[names[1]][k] for k in keys}
    tail = (1 - level) / 2 * 100
    return {
        name: {k: percentile_interval(values, tail) for k, values in metrics.items()}
        for name, metrics in table.items()
    }


def paired_resamples(count, n_resamples=2000, seed=0):
    """`n_resamples` seeded index arrays drawing `count` items with replacement: the resampling of
    every paired bootstrap here, so each model (or score vector) is indexed by the same draw."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield rng.integers(0, count, count)


def bootstrap_mean_interval(values, n_resamples=2000, seed=0, level=0.95):
    """Percentile bootstrap interval of the mean of `values` (e.g. per-image differences of two
    models scored on the same images, which makes it a paired bootstrap)."""
    values = np.asarray(values, dtype=float)
    means = np.array(
        [values[index].mean() for index in paired_resamples(values.size, n_resamples, seed)]
    )
    return percentile_interval(means, (1 - level) / 2 * 100)


def percentile_interval(values, tail):
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
