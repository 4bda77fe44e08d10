"""Metrics, bootstrap intervals, folds and the verdict used by transfer_vgg16.py."""

import numpy as np
import pytest

from medlab.app.classification import transfer_run
from medlab.classification.metrics import binary_metrics, bootstrap_metrics, roc_auc, roc_curve
from medlab.classification.train import stratified_folds


def test_binary_metrics_on_a_known_confusion_matrix():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.3, 0.2, 0.4])  # tp 3, fn 1, fp 1, tn 5
    m = binary_metrics(labels, scores)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75) and m["specificity"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 5 / 6) / 2)
    assert m["auc"] == pytest.approx(roc_auc(labels, scores))
    assert np.isnan(binary_metrics([1, 1], [0.9, 0.2])["specificity"])  # no negatives: undefined


def test_roc_curve_area_matches_the_rank_auc():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = np.round(labels * 0.3 + rng.uniform(0, 1, 60), 1)  # ties included
    fpr, tpr = roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)  # trapezoids
    assert area == pytest.approx(roc_auc(labels, scores))


def test_bootstrap_interval_separates_a_real_difference_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    good = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 200), 0, 1)  # perfect
    coin = rng.uniform(0, 1, 200)
    other_coin = rng.uniform(0, 1, 200)
    real = bootstrap_metrics(labels, {"good": good, "coin": coin}, n_resamples=300)
    assert real["difference"]["accuracy"][0] > 0.3
    assert real["good"]["accuracy"] == [1.0, 1.0]
    low, high = real["coin"]["accuracy"]
    assert low < 0.5 < high and high - low < 0.2
    noise = bootstrap_metrics(labels, {"a": coin, "b": other_coin}, n_resamples=300)
    assert noise["difference"]["accuracy"][0] < 0 < noise["difference"]["accuracy"][1]
    assert "verdict" not in noise  # the verdict is the script's, in words


def test_verdict_words_follow_the_interval():
    base = {"val_accuracy": 0.1}
    assert "transfer learning is more accurate" in transfer_run.difference_verdict(
        {**base, "val_accuracy_ci": [0.02, 0.2]}
    )
    assert "from scratch is more accurate" in transfer_run.difference_verdict(
        {"val_accuracy": -0.1, "val_accuracy_ci": [-0.2, -0.01]}
    )
    assert "no accuracy difference" in transfer_run.difference_verdict(
        {**base, "val_accuracy_ci": [-0.05, 0.2]}
    )


def test_stratified_folds_cover_every_image_once_with_both_classes():
    labels = np.array([0] * 7 + [1] * 13)
    folds = stratified_folds(labels, 3, seed=0)
    held_out = np.concatenate([val for _, val in folds])
    assert sorted(held_out) == list(range(20))
    for train, val in folds:
        assert not set(train) & set(val)
        assert set(np.bincount(labels[val], minlength=2)) <= {2, 3, 4, 5}
    assert [list(v) for _, v in folds] != [list(v) for _, v in stratified_folds(labels, 3, seed=1)]


def test_positive_class_flips_labels_and_scores():
    labels, scores = transfer_run.oriented(
        np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), positive=0
    )
    assert labels.tolist() == [1, 0, 0] and scores.tolist() == pytest.approx([0.8, 0.1, 0.6])
