"""`--groups` and `--holdout-group`: training splits made by group (hospital, scanner, data set),
so that a model is scored on pairs of a source it never saw (`medlab.groups` does the splitting).

    --groups prefix --holdout-group MCUCXR   train on every other group, validate on MCUCXR
    --groups prefix --folds 2                each fold holds out whole groups; pooled scores
"""

from medlab.errors import UserError
from medlab.groups import PREFIX, describe_groups, group_folds, holdout_split, pair_groups
from medlab.pairs import find_pairs

NO_GROUPS = "none"


def check_grouping(p):
    """One-line refusals of grouping parameters that cannot work together (before any data)."""
    groups, holdout = p.get("groups", NO_GROUPS), p.get("holdout_group", "")
    if groups not in (NO_GROUPS, PREFIX) and not str(groups).lower().endswith(".csv"):
        raise UserError(
            f"--groups {groups} is none, prefix or a .csv file; give a CSV file with the "
            "columns image,group, or prefix to group by the file name up to its first _"
        )
    if holdout and groups == NO_GROUPS:
        raise UserError(
            f"--holdout-group {holdout} needs the groups: add --groups prefix (file names "
            "GROUP_...) or --groups FILE.csv (columns image,group)"
        )
    if holdout and p.get("folds", 0) >= 2:
        raise UserError(
            f"--holdout-group {holdout} and --folds {p['folds']} are two different splits; "
            "drop one (with --groups, --folds K alone holds out whole groups per fold)"
        )


def check_groups(p):
    """Fail fast, before TensorFlow starts: every pair has a group and the held-out group exists."""
    if p.get("groups", NO_GROUPS) != NO_GROUPS:
        group_splits([path.name for path in find_pairs(p["data_dir"])[0]], p, announce=None)


def group_splits(names, p, announce=print):
    """[(training, validation)] indices of the pairs named `names`: one split holding out
    `--holdout-group`, else `--folds` K folds of whole groups (K >= 2; the --val-fraction split
    has no group form). `announce` is told which groups each split holds out."""
    groups = pair_groups(names, p["groups"])
    if p.get("holdout_group"):
        splits = [holdout_split(groups, p["holdout_group"])]
    elif p.get("folds", 0) >= 2:
        splits = group_folds(groups, p["folds"], p["seed"])
    else:
        raise UserError(
            f"--groups {p['groups']} needs --holdout-group NAME (one of "
            f"{describe_groups(groups)}) or --folds K to say how the groups are split"
        )
    if announce:
        announce(f"groups ({p['groups']}): {describe_groups(groups)}")
        for k, (_, held_out) in enumerate(splits, 1):
            held = sorted({groups[i] for i in held_out})
            announce(f"  split {k} validates on {', '.join(held)}, trains on the other groups")
    return splits
