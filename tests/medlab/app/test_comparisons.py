"""Paired comparisons of two runs: interval and p-value against scipy.stats, verdicts, pairing."""

import warnings

import numpy as np
import pytest
from scipy import stats

from medlab.app.comparisons import (
    compare_runs,
    comparisons_markdown,
    paired_difference,
    parse_compare,
    select_comparisons,
    unlearnt_verdict,
    verdict,
    with_two_run_default,
)
from medlab.errors import UserError

DICE = [("dice", "Dice", True)]


def scores_pair(seed=3, shift=0.02, count=20):
    rng = np.random.default_rng(seed)
    second = rng.uniform(0.8, 0.95, count)
    return second + rng.normal(shift, 0.02, count), second


def test_interval_and_p_value_match_scipy():
    first, second = scores_pair()
    result = paired_difference(first, second, n_resamples=20000, seed=1)
    assert result["difference"] == pytest.approx(np.mean(first - second))
    assert result["p_value"] == pytest.approx(stats.wilcoxon(first, second).pvalue)
    reference = stats.bootstrap(
        (first - second,),
        np.mean,
        n_resamples=20000,
        method="percentile",
        rng=np.random.default_rng(2),
    ).confidence_interval
    width = reference.high - reference.low
    # Two Monte Carlo estimates of the same percentiles: equal up to resampling noise.
    assert result["ci"][0] == pytest.approx(reference.low, abs=0.05 * width)
    assert result["ci"][1] == pytest.approx(reference.high, abs=0.05 * width)
    assert result["images"] == 20


def test_identical_runs_give_zero_and_no_difference_without_warnings():
    first, _ = scores_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's test is undefined here; we must not call it
        result = paired_difference(first, first.copy())
    assert (result["difference"], result["ci"], result["p_value"]) == (0.0, [0.0, 0.0], 1.0)
    assert verdict("4a", "4a-again", result, "Dice").startswith("no difference")


def test_verdict_names_the_better_run_for_either_direction_of_a_metric():
    first, second = scores_pair(shift=0.03)
    result = paired_difference(first, second)
    assert verdict("4e", "4c", result, "Dice").startswith("4e beats 4c by 0.0")
    assert "larger than the noise" in verdict("4e", "4c", result, "Dice")
    # The same numbers as distances (lower is better): now the second run is the better one.
    assert verdict("4e", "4c", result, "px HD95", higher_is_better=False).startswith("4c beats 4e")
    first, _ = scores_pair()
    changes = np.random.default_rng(1).normal(0, 0.02, 10)
    noise = paired_difference(
        first, first + np.concatenate([changes, -changes])
    )  # symmetric: mean 0
    assert "no difference larger than the noise" in verdict("a", "b", noise, "Dice")


def test_few_images_are_not_called_a_real_difference():
    first, second = np.array([0.9, 0.91, 0.92]), np.array([0.8, 0.8, 0.81])
    line = verdict("a", "b", paired_difference(first, second), "Dice")
    assert "a beats b" in line and "not established" in line and "larger than the noise" not in line


def test_runs_are_paired_by_image_name_and_comparisons_not_run_are_noted():
    first, second = scores_pair()
    names = [f"p{i}" for i in range(20)]
    order = np.random.default_rng(0).permutation(20)
    scores = {
        "a": {"dice": first, "image": names},
        "b": {"dice": second[order], "image": [names[i] for i in order]},  # same images, shuffled
        "c": {"dice": second[:10], "image": names[:10]},
    }
    kept, notes = select_comparisons(
        [("a", "b", "q1"), ("a", "b", "again"), ("a", "x", "q2"), ("a", "c", "q3")], scores
    )
    assert [k[:2] for k in kept] == [("a", "b"), ("a", "c")] and "x not run" in notes[0]
    results, skipped = compare_runs(kept, scores, DICE)
    assert results[0]["metrics"]["dice"]["difference"] == pytest.approx(np.mean(first - second))
    assert "not scored on the same images" in skipped[0]
    text = comparisons_markdown(results, notes + skipped)
    assert "| q1 | a | b | dice |" in text and results[0]["verdict"] in text


@pytest.mark.parametrize(
    "value, message",
    [
        ("4a-4b", "is not two experiments"),
        ("4a:4a", "is not two"),
        ("4a:4z", "unknown experiment 4z"),
    ],
)
def test_bad_compare_flags_are_one_line_errors(value, message):
    with pytest.raises(UserError, match=message):
        parse_compare([value], ["4a", "4b"])
    assert parse_compare(["4a:4b,4b:4a"], ["4a", "4b"])[1][:2] == ("4b", "4a")


def test_two_runs_are_compared_with_each_other_unless_a_comparison_already_pairs_them():
    lab = [("4a", "4b", "loss")]
    assert with_two_run_default(lab, ["4a", "4e-dice"])[-1] == (
        "4a",
        "4e-dice",
        "the two experiments run",
    )
    assert with_two_run_default(lab, ["4b", "4a"]) == lab
    assert with_two_run_default(lab, ["4a", "4b", "4c-bce"]) == lab


def test_a_tiny_difference_is_printed_with_its_digits_not_as_zero():
    second = np.linspace(0.8, 0.9, 20)
    line = verdict("a", "b", paired_difference(second + 0.0002, second), "Dice")
    assert "a beats b by 0.0002 [0.0002, 0.0002] Dice: larger than the noise" in line


def test_a_pair_with_a_run_that_has_not_learnt_gets_its_numbers_but_no_verdict():
    first, second = scores_pair(shift=-0.5)  # "a" far worse: a verdict would say b beats a
    names = [f"p{i}" for i in range(20)]
    scores = {
        name: {"dice": dice, "hd95": 10 * (1 - dice), "image": names}
        for name, dice in (("a", first), ("b", second))
    }
    failed = {"a": ("collapsed to the empty mask", "Rerun a: `python x.py --epochs 20`.")}
    metrics = [*DICE, ("hd95", "px HD95", False)]
    (result,), _ = compare_runs([("a", "b", "q")], scores, metrics, not_learnt=failed)
    for line in [result["verdict"], *(m["verdict"] for m in result["metrics"].values())]:
        assert "beats" not in line and "larger than the noise" not in line
        assert line.startswith("no verdict: a has not learnt (collapsed to the empty mask)")
        assert "Rerun a: `python x.py --epochs 20`." in line
    assert result["metrics"]["dice"]["difference"] == pytest.approx(np.mean(first - second))
    text = comparisons_markdown([result], [])
    assert text.count("no verdict: a has not learnt") == 3  # the table's two rows, said once below
    assert unlearnt_verdict("a", "b", {}) is None
    both = unlearnt_verdict("a", "b", {**failed, "b": ("predicts one class", "Fix b.")})
    assert both.startswith("no verdict: a and b have not learnt (a: collapsed to the empty mask; b")
    assert "Fix b." in both
