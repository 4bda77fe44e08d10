"""Splits by group (`medlab.groups`) and `--groups` / `--holdout-group` of main_segmentation.py:
no group on both sides of a split, the same split every time, one-line refusals."""

import re

import numpy as np
import pytest
from helpers import xray_folder

import main_segmentation
from medlab.app.segmentation.run import data_splits
from medlab.errors import UserError
from medlab.groups import csv_groups, group_folds, holdout_split, prefix_groups

NAMES = [
    f"{group}_{i:04d}_0.png" for group, n in (("CHN", 6), ("MCU", 3), ("JSRT", 2)) for i in range(n)
]


def test_prefix_groups_are_the_names_up_to_the_first_underscore():
    assert prefix_groups(["CHNCXR_0001_0.png", "MCUCXR_0002_1.png"]) == ["CHNCXR", "MCUCXR"]
    with pytest.raises(
        UserError, match="2 file name\\(s\\) have no GROUP_ prefix .*p1.png, _x.png"
    ):
        prefix_groups(["A_1.png", "p1.png", "_x.png"])


def test_holdout_keeps_the_group_whole_on_the_validation_side():
    groups = prefix_groups(NAMES)
    train, val = holdout_split(groups, "MCU")
    assert sorted(NAMES[i] for i in val) == [n for n in NAMES if n.startswith("MCU_")]
    assert sorted(np.concatenate([train, val])) == list(range(len(NAMES)))
    assert "MCU" not in {groups[i] for i in train}
    with pytest.raises(
        UserError,
        match="no group 'MCUCXR' .* CHN \\(6 pairs\\), JSRT \\(2 pairs\\), MCU \\(3 pairs\\)",
    ):
        holdout_split(groups, "MCUCXR")


@pytest.mark.parametrize("folds", [2, 3])
def test_group_folds_hold_out_every_group_once_and_never_split_one(folds):
    groups = np.array(prefix_groups(NAMES))
    splits = group_folds(groups, folds, seed=3)
    assert len(splits) == folds
    held = np.concatenate([val for _, val in splits])
    assert sorted(held) == list(range(len(NAMES)))  # every pair held out exactly once
    for train, val in splits:
        assert not set(groups[train]) & set(groups[val])  # no group on both sides
        assert sorted(np.concatenate([train, val])) == list(range(len(NAMES)))
    again = group_folds(groups, folds, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    if folds == 2:  # largest first, into the emptier fold: CHN (6) against MCU + JSRT (5)
        assert [sorted(set(groups[val])) for _, val in splits] == [["CHN"], ["JSRT", "MCU"]]
    with pytest.raises(UserError, match="4 folds of whole groups need at least 4 groups"):
        group_folds(groups, 4, seed=3)


def test_csv_groups_map_file_names_or_stems_and_name_what_is_missing(tmp_path):
    table = tmp_path / "sites.csv"
    table.write_text("image,site,group\nCHN_0000_0.png,a,north\nMCU_0000_0,b,south\n")
    assert csv_groups(["CHN_0000_0.png", "MCU_0000_0.png"], table) == ["north", "south"]
    with pytest.raises(
        UserError, match="sites.csv gives no group for 1 of the 3 images \\(JSRT_1.png\\)"
    ):
        csv_groups(["CHN_0000_0.png", "MCU_0000_0.png", "JSRT_1.png"], table)
    (tmp_path / "bad.csv").write_text("file,hospital\nx.png,a\n")
    with pytest.raises(
        UserError, match="bad.csv has the columns file, hospital, not image and group"
    ):
        csv_groups(["x.png"], tmp_path / "bad.csv")
    with pytest.raises(UserError, match="group file .*nowhere.csv does not exist"):
        csv_groups(["x.png"], tmp_path / "nowhere.csv")


def grouped_folder(tmp_path, groups=("CHN", "CHN", "CHN", "MCU", "MCU")):
    data = xray_folder(tmp_path, count=len(groups), size=32)
    for i, group in enumerate(groups):
        for folder in ("Image", "Mask"):
            (data / folder / f"p{i}.png").rename(data / folder / f"{group}_{i}.png")
    return data


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--holdout-group", "MCU"], "--holdout-group MCU needs the groups: add --groups prefix"),
        (
            ["--groups", "prefix", "--holdout-group", "JSRT"],
            "no group 'JSRT' to hold out; the groups are CHN \\(3 pairs\\), MCU \\(2 pairs\\)",
        ),
        (["--groups", "prefix"], "--groups prefix needs --holdout-group NAME"),
        (["--groups", "sites.txt"], "--groups sites.txt is none, prefix or a .csv file"),
        (
            ["--groups", "prefix", "--holdout-group", "MCU", "--folds", "2"],
            "are two different splits",
        ),
        (["--groups", "prefix", "--folds", "3"], "3 folds of whole groups need at least 3 groups"),
    ],
)
def test_grouping_mistakes_are_one_error_line_exit_2_before_any_work(
    tmp_path, capsys, flags, message
):
    data = grouped_folder(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main_segmentation.main(["--data-dir", str(data), "--out", str(out), *flags])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(error.splitlines()) == 1
    assert error.startswith("error: ")

    assert re.search(message, error), error
    assert not out.exists()


def test_the_pipeline_splits_by_group_when_asked_and_as_before_when_not():
    """`data_splits` gives the pipeline its splits: by group with --groups, else unchanged."""
    p = {**main_segmentation.PARAMETERS, "groups": "prefix", "holdout_group": "MCU"}
    ((train, val),) = data_splits(NAMES, p)
    assert [NAMES[i] for i in val] == ["MCU_0000_0.png", "MCU_0001_0.png", "MCU_0002_0.png"]
    folds = data_splits(NAMES, {**p, "holdout_group": "", "folds": 3})
    assert [sorted({NAMES[i][:3] for i in val}) for _, val in folds] == [["CHN"], ["MCU"], ["JSR"]]
    plain = data_splits(NAMES, main_segmentation.PARAMETERS)
    assert len(plain) == 1 and len(plain[0][1]) == 2  # the --val-fraction 0.2 split of 11 pairs
