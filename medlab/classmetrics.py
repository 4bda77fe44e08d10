"""Binary classification metrics on label and score arrays (class 1 = positive)."""
import numpy as np


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
