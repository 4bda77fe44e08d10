"""The marker test of Task 3 (`cam_vgg16.py`): does a classifier read the burned-in text marker
instead of the image? The synthetic shortcut set records which class each image's marker stands
for; where the marker lies about the class, a classifier that reads it fails.

No TensorFlow here: plain counts and an exact test, so it is cheap to test on hand-made answers."""

from math import comb

# The summary calls the marker a shortcut when accuracy on the images whose marker belongs to the
# other class is lower by more than the gap than on the rest, and significantly so (Fisher,
# one-sided).
MARKER_ACCURACY_GAP, MARKER_P_VALUE = 0.25, 0.01


def marker_test(labels, correct, marker_classes):
    """Accuracy where the text marker agrees with the class and where it belongs to the other class
    (synthetic sets record which), with the one-sided Fisher exact p-value of "fewer correct where
    the marker lies": a classifier that reads the marker fails there."""
    if marker_classes is None:
        return None
    lies = marker_classes != labels
    group = lambda keep: {
        "n": int(keep.sum()),
        "accuracy": float(correct[keep].mean()) if keep.any() else None,
    }
    return {
        "marker_agrees": group(~lies),
        "marker_contradicts": group(lies),
        "p_value": fisher_lower_tail(
            int(correct[lies].sum()), int(lies.sum()), int(correct.sum()), len(labels)
        ),
    }


def fisher_lower_tail(hits, draws, successes, total):
    """P(X <= hits), X hypergeometric: `draws` of `total` images, `successes` of them correct."""
    return sum(
        comb(successes, i) * comb(total - successes, draws - i) for i in range(hits + 1)
    ) / comb(total, draws)


def marker_outcome(test):
    """'relies', 'no evidence', or 'untestable' when no image (or every one) has a lying marker."""
    agree, lies = test["marker_agrees"], test["marker_contradicts"]
    if agree["n"] == 0 or lies["n"] == 0:
        return "untestable"
    if (
        test["p_value"] < MARKER_P_VALUE
        and lies["accuracy"] < agree["accuracy"] - MARKER_ACCURACY_GAP
    ):
        return "relies"
    return "no evidence"
