"""Paired comparisons of two runs scored on the same images: the per-image difference, a paired
bootstrap interval of its mean, a Wilcoxon signed-rank p-value, a verdict in words and a figure of
both runs' learning curves on the same axes.

A comparison is a triple (first, second, question), e.g. ("4a", "4b", "BCE vs Dice loss"); its
difference is first minus second. As in transfer_vgg16.py a difference is "larger than the noise"
when its 95% interval excludes 0, and here also only when the Wilcoxon test agrees (p < 0.05).

A pair in which a run has not learnt (a collapsed U-Net, a classifier that predicts one class) gets
its numbers but no verdict (`unlearnt_verdict`): its difference measures a failed training, not
the question asked. Every report of a comparison, in every task, takes its verdict from here.
"""

import numpy as np

from medlab.app.report import markdown_table
from medlab.classification.metrics import bootstrap_mean_interval
from medlab.errors import UserError

RESAMPLES = 2000
LEVEL = 0.95
ALPHA = 1 - LEVEL


def parse_compare(values, known):
    """`--compare A:B` values (repeatable, or comma-separated) as (A, B, "A vs B") comparisons."""
    pairs = []
    for text in (item.strip() for value in values or [] for item in value.split(",")):
        names = [name.strip() for name in text.split(":")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise UserError(
                f"--compare {text} is not two experiments A:B; write e.g. --compare 4a:4e-dice"
            )
        pairs.append((*names, "asked with --compare"))
    return check_names(pairs, known, "--compare")


def check_names(comparisons, known, source):
    """`comparisons`, or a one-line error naming the first that names an unknown experiment."""
    for first, second, _ in comparisons:
        unknown = [name for name in (first, second) if name not in known]
        if unknown:
            raise UserError(
                f"{source} {first}:{second} names unknown experiment {', '.join(unknown)}; "
                f"choose from {', '.join(known)}"
            )
    return list(comparisons)


def select_comparisons(comparisons, ran):
    """The comparisons whose two runs exist in `ran`, each once, and a note for each one skipped."""
    kept, notes, seen = [], [], set()
    for first, second, question in comparisons:
        if (first, second) in seen:
            continue
        seen.add((first, second))
        missing = [name for name in (first, second) if name not in ran]
        if missing:
            notes.append(
                f"skipped {first} vs {second}, {question}: {', '.join(missing)} not run in "
                "this invocation"
            )
        else:
            kept.append((first, second, question))
    return kept, notes


def with_two_run_default(comparisons, ran):
    """`comparisons`, plus the two runs made compared with each other when exactly two were made
    and no comparison pairs them: a user who runs two experiments wants to know which is better."""
    ran = list(ran)
    if len(ran) == 2 and not any({first, second} == set(ran) for first, second, _ in comparisons):
        return [*comparisons, (*ran, "the two experiments run")]
    return list(comparisons)


def paired_difference(first, second, n_resamples=RESAMPLES, seed=0, level=LEVEL):
    """Mean of `first - second` over paired items, its bootstrap interval and the Wilcoxon p-value.

    Identical scores give a difference of 0, the interval [0, 0] and p = 1: the signed-rank test
    is undefined when every difference is zero, and "no evidence of a difference" is its meaning.
    """
    from scipy.stats import wilcoxon  # here: SciPy takes ~0.3 s to load, and --help needs none

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    differences = first - second
    p_value = float(wilcoxon(differences).pvalue) if np.any(differences) else 1.0
    return {
        "mean_first": float(first.mean()),
        "mean_second": float(second.mean()),
        "difference": float(differences.mean()),
        "ci": bootstrap_mean_interval(differences, n_resamples, seed, level),
        "p_value": p_value,
        "images": int(differences.size),
    }


def shown(value, sign=""):
    """A difference with three decimals, or two significant digits when smaller than 0.01, so a
    tiny difference the test finds real is not printed as 0.000."""
    return f"{value:{sign}.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:{sign}.2g}"


def verdict(first, second, result, label, higher_is_better=True):
    """One line in words: which run is better on `label`, by how much, and whether it is noise.

    A difference is called larger than the noise only when both agree: its bootstrap interval
    excludes 0 and the Wilcoxon p-value is below `ALPHA`. With a handful of images the percentile
    bootstrap is too narrow, while the signed-rank test cannot reach `ALPHA` below 6 images.
    """
    value, (low, high) = result["difference"], result["ci"]
    if value == 0 and low == high == 0:
        return f"no difference: {first} and {second} score the same {label} on every image"
    sign = 1 if higher_is_better else -1  # gain of `first` over `second`, positive = first better
    gain, gain_low, gain_high = sign * value, *sorted((sign * low, sign * high))
    p = f"Wilcoxon p = {result['p_value']:.2g}"
    if gain_low <= 0 <= gain_high:
        return (
            f"no difference larger than the noise: {first} - {second} = {shown(value, '+')} "
            f"[{shown(low, '+')}, {shown(high, '+')}] {label}, the interval includes 0 ({p})"
        )
    better, worse, by, span = (
        (first, second, gain, (gain_low, gain_high))
        if gain > 0
        else (second, first, -gain, (-gain_high, -gain_low))
    )
    claim = f"{better} beats {worse} by {shown(by)} [{shown(span[0])}, {shown(span[1])}] {label}"
    if result["p_value"] < ALPHA:
        return f"{claim}: larger than the noise ({p})"
    return f"{claim}, but {p}: not established, the signed-rank test does not confirm the interval"


def unlearnt_verdict(first, second, not_learnt):
    """The verdict of a pair in which a run has not learnt, or None when both have learnt.

    Args:
        not_learnt: {run: (what it did, what to do)} for each run that has not learnt, e.g.
            {"4d-dice": ("collapsed to the empty mask", "rerun it with `python ...`")}.
    """
    failed = [name for name in dict.fromkeys((first, second)) if name in not_learnt]
    if not failed:
        return None
    what = "; ".join(
        not_learnt[name][0] if len(failed) == 1 else f"{name}: {not_learnt[name][0]}"
        for name in failed
    )
    todo = " ".join(not_learnt[name][1] for name in failed)
    subject = " and ".join(failed)
    return (
        f"no verdict: {subject} {'has' if len(failed) == 1 else 'have'} not learnt ({what}), so "
        f"the difference measures a failed training, not the settings compared. {todo} Then "
        "compare again."
    )


def aligned(scores, first, second):
    """Both runs' per-image scores in the same image order, or None when the images differ."""
    names_first, names_second = list(scores[first]["image"]), list(scores[second]["image"])
    if sorted(names_first) != sorted(names_second) or len(set(names_first)) != len(names_first):
        return None
    position = {name: i for i, name in enumerate(names_second)}
    order = [position[name] for name in names_first]
    return scores[first], {key: np.asarray(values)[order] for key, values in scores[second].items()}


def compare_runs(comparisons, scores, metrics, seed=0, n_resamples=RESAMPLES, not_learnt=None):
    """Every comparison on every metric of `metrics` ((key, label, higher_is_better) triples).

    `scores` maps a run to its per-image scores, with the image names under "image";
    `not_learnt` the runs that have not learnt, as `unlearnt_verdict` takes them: a pair with one
    gets its numbers and that sentence instead of a verdict. Returns the results (one dict per
    comparison) and notes for those that could not be made.
    """
    results, notes = [], []
    for first, second, question in comparisons:
        pair = aligned(scores, first, second)
        if pair is None:
            notes.append(
                f"skipped {first} vs {second}, {question}: the two runs were not scored on the "
                "same images"
            )
            continue
        entry = {"first": first, "second": second, "question": question, "metrics": {}}
        withheld = unlearnt_verdict(first, second, not_learnt or {})
        for key, label, higher in metrics:
            result = paired_difference(pair[0][key], pair[1][key], n_resamples, seed)
            entry["metrics"][key] = {
                **result,
                "verdict": withheld or verdict(first, second, result, label, higher),
            }
        entry["verdict"] = entry["metrics"][metrics[0][0]]["verdict"]
        results.append(entry)
    return results, notes


def comparison_rows(results):
    """One flat row per comparison and metric, for comparisons.csv and the Markdown table."""
    return [
        {
            "first": r["first"],
            "second": r["second"],
            "question": r["question"],
            "metric": key,
            "mean_first": m["mean_first"],
            "mean_second": m["mean_second"],
            "difference": m["difference"],
            "ci_low": m["ci"][0],
            "ci_high": m["ci"][1],
            "p_value": m["p_value"],
            "images": m["images"],
            "verdict": m["verdict"],
            "differs": r.get("differs", ""),
        }
        for r in results
        for key, m in r["metrics"].items()
    ]


def comparison_figure(histories, path, first, second, question, panels):
    """Training (solid) and validation (dashed) curves of both runs on the same axes."""
    from medlab import plots

    plots.plot_curves(
        {first: histories[first], second: histories[second]},
        path,
        metrics=tuple(panels),
        titles={
            metric: f"{title} - {question}" if i == 0 else title
            for i, (metric, title) in enumerate(panels.items())
        },
    )


def comparisons_markdown(results, notes, resamples=RESAMPLES):
    """The comparisons section of a summary: a table, then each verdict beside its curves."""
    if not results and not notes:
        return ""
    lines = [
        "## Paired comparisons",
        "",
        (
            "Each difference is first minus second, per image, on the same images; the interval is "
            f"a {LEVEL:.0%} paired bootstrap of the mean difference ({resamples} resamples) and p "
            "the Wilcoxon signed-rank test. A difference is larger than the noise when its "
            f"interval excludes 0 and p < {ALPHA:g}. Higher Dice and lower HD95 are better. Both "
            "cover the choice of images, not the luck of training: each run is one trained model, "
            "and another seed can move a run by more than these intervals (check with a second "
            "--seed, or --folds)."
        ),
        "",
    ]
    rows = [
        {
            **row,
            "p": f"{row['p_value']:.2g}",
            "difference [95% CI]": (
                f"{shown(row['difference'], '+')} "
                f"[{shown(row['ci_low'], '+')}, {shown(row['ci_high'], '+')}]"
            ),
        }
        for row in comparison_rows(results)
    ]
    if rows:
        lines += [
            markdown_table(
                rows,
                [
                    "question",
                    "first",
                    "second",
                    "metric",
                    "mean_first",
                    "mean_second",
                    "difference [95% CI]",
                    "p",
                    "verdict",
                ],
                {"mean_first": ".3f", "mean_second": ".3f"},
            ),
            "",
        ]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    for r in results:
        lines += [f"### {r['first']} vs {r['second']}: {r['question']}", ""]
        verdicts = dict.fromkeys(m["verdict"] for m in r["metrics"].values())  # withheld: once
        lines += [f"- {line}" for line in verdicts]
        if r.get("differs"):
            lines += [f"- The two runs differ in: {r['differs']}."]
        lines += [""] + (
            [f"![{r['first']} and {r['second']}: learning curves]({r['figure']})", ""]
            if "figure" in r
            else []
        )
    return "\n".join(lines) + "\n"
