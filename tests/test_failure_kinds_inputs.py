"""Kind 1 of the failures (the part closed so far): inputs that do not match what a result claims.
A `--groups` CSV that gives one image two groups is refused in one line, however the rows name the
image (file name, stem, path) and wherever the second row is; identical repeats are harmless."""

import importlib
import itertools

import pytest

from medlab.errors import UserError
from medlab.groups import csv_groups
from tests.test_failure_kinds_blank import SCRIPTS

NAMINGS = {"name": "p1.png", "stem": "p1", "path": "Image/p1.png"}


def table(tmp_path, rows):
    path = tmp_path / "groups.csv"
    path.write_text("image,group\n" + "".join(f"{image},{group}\n" for image, group in rows))
    return path


@pytest.mark.parametrize("first, second", list(itertools.product(NAMINGS, repeat=2)))
@pytest.mark.parametrize("position", ["adjacent", "apart"])
def test_an_image_given_two_groups_is_refused(tmp_path, first, second, position):
    rows = [(NAMINGS[first], "hospitalA"), ("p2.png", "hospitalB")]
    twin = (NAMINGS[second], "hospitalB")
    rows.insert(1 if position == "adjacent" else 2, twin)
    path = table(tmp_path, rows)
    with pytest.raises(UserError, match="gives p1.* two groups .*keep one row per image"):
        csv_groups(["p1.png", "p2.png"], path)


def test_a_repeated_identical_row_is_harmless(tmp_path):
    path = table(tmp_path, [("p1.png", "A"), ("p1.png", "A"), ("p2.png", "B")])
    assert csv_groups(["p1.png", "p2.png"], path) == ["A", "B"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_data_folder_that_is_a_file_is_one_line(name, tmp_path, monkeypatch, capsys):
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "X_ray.zip"
    afile.write_bytes(b"PK")
    with pytest.raises(SystemExit) as stop:
        module.main(["--data-dir", str(afile), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err == err.splitlines()[0]
    assert err.startswith(f"error: data folder {afile} is a file, not a folder")
    assert sorted(tmp_path.iterdir()) == [afile]
