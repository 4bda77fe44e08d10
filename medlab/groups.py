"""Groups of image/mask pairs (the hospital, scanner or data set each pair came from) and splits
made by group, so that no group has pairs on both sides of a split: a model is then scored on a
source it never saw, as it will be on a new user's data.

A pair's group comes from its file name (`prefix`: the name up to its first `_`, so
CHNCXR_0001_0.png is in group CHNCXR) or from a CSV file with the columns `image` (the file name)
and `group`. Reads no pixels and starts no TensorFlow.
"""

import csv
from pathlib import Path

import numpy as np

from medlab.errors import UserError

PREFIX = "prefix"
CSV_COLUMNS = ("image", "group")


def pair_groups(names, source):
    """The group of each of the file `names`: by file-name prefix (`source` "prefix") or from the
    CSV file `source`."""
    return prefix_groups(names) if source == PREFIX else csv_groups(names, source)


def prefix_groups(names):
    """Each file name up to its first `_` (CHNCXR_0001_0.png -> CHNCXR)."""
    groups = [Path(name).stem.split("_", 1)[0] for name in names]
    lacking = [name for name, group in zip(names, groups) if group == Path(name).stem or not group]
    if lacking:
        raise UserError(
            f"{len(lacking)} file name(s) have no GROUP_ prefix to group by ({shorten(lacking)}); "
            "rename them GROUP_..., or list each file's group in a CSV file with the columns "
            f"{','.join(CSV_COLUMNS)}"
        )
    return groups


def csv_groups(names, path):
    """Each file name's group in the CSV file `path` (columns image, group; other columns and
    rows of other files are ignored). The image column may hold the file name or its stem."""
    table = read_group_table(path)
    groups, missing = [], []
    for name in names:
        group = table.get(name, table.get(Path(name).stem))
        groups.append(group)
        if not group:
            missing.append(name)
    if missing:
        raise UserError(
            f"{path} gives no group for {len(missing)} of the {len(names)} images "
            f"({shorten(missing)}); add a row image,group for each of them"
        )
    return groups


def read_group_table(path):
    """{file name: group} of a CSV file with the columns of `CSV_COLUMNS`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"group file {path} does not exist; give a CSV file with the columns "
            f"{','.join(CSV_COLUMNS)}, one row per image"
        )
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not set(CSV_COLUMNS) <= set(columns):
            raise UserError(
                f"{path} has the columns {', '.join(columns) or 'none'}, not "
                f"{' and '.join(CSV_COLUMNS)}; name its header line {','.join(CSV_COLUMNS)}"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    table, by_stem = {}, {}
    for line, row in enumerate(rows, start=2):
        name = Path(row["image"]).name
        if not name:
            continue
        # By stem too: `p1` and `p1.png` name one image (pairing goes by stem).
        earlier = by_stem.setdefault(Path(name).stem, row["group"])
        if earlier != row["group"]:
            # The last row winning would put a pair of a held-out group into training.
            raise UserError(
                f"{path} gives {name} two groups ({earlier} and {row['group']}, line "
                f"{line}); keep one row per image"
            )
        table[name] = row["group"]
    return table


def group_sizes(groups):
    """{group: number of pairs}, groups sorted by name."""
    names, counts = np.unique(np.asarray(groups, dtype=str), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist()))


def describe_groups(groups):
    """'CHNCXR (59 pairs), MCUCXR (13 pairs)'."""
    return ", ".join(f"{name} ({count} pairs)" for name, count in group_sizes(groups).items())


def holdout_split(groups, holdout):
    """(training indices, validation indices): every pair of group `holdout` is held out, all
    pairs of the other groups train."""
    groups = np.asarray(groups, dtype=str)
    sizes = group_sizes(groups)
    if holdout not in sizes:
        raise UserError(
            f"there is no group {holdout!r} to hold out; the groups are {describe_groups(groups)}"
        )
    if len(sizes) < 2:
        raise UserError(
            f"every pair is in group {holdout!r}, so none is left to train on; "
            "add pairs of another group"
        )
    return np.flatnonzero(groups != holdout), np.flatnonzero(groups == holdout)


def group_folds(groups, folds, seed):
    """`folds` (training, held-out) index pairs in which each group is held out whole by exactly
    one fold. With as many folds as groups, each fold holds out one group (leave-one-group-out);
    with fewer, the largest groups are placed first, each in the fold with the fewest pairs so
    far (ties of size broken in seeded order), so the folds are about equally large."""
    groups = np.asarray(groups, dtype=str)
    sizes = group_sizes(groups)
    if folds > len(sizes):
        raise UserError(
            f"{folds} folds of whole groups need at least {folds} groups, but there are "
            f"{len(sizes)}: {describe_groups(groups)}; use at most {len(sizes)} folds"
        )
    rank = dict(zip(sizes, np.random.default_rng(seed).permutation(len(sizes))))
    fold_of_group, filled = {}, np.zeros(folds, dtype=int)
    for group in sorted(sizes, key=lambda g: (-sizes[g], rank[g])):
        fold_of_group[group] = int(np.argmin(filled))
        filled[fold_of_group[group]] += sizes[group]
    fold_of = np.array([fold_of_group[group] for group in groups])
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]


def shorten(names, shown=5):
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")
