"""The built-in synthetic Skin and Bone sets: layout, determinism, masks and the shortcut."""

import json

import cv2
import numpy as np
import pytest

from medlab.classification.data import load_class_split
from medlab.synthetic import skin_bone as sc

SMALL = dict(n_train=8, n_val=4, size=96)


def make(tmp_path, dataset, **options):
    return sc.synthetic_class_set(dataset, root=tmp_path, **{**SMALL, **options})


def read(path):
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, f"cannot read {path}"
    return pixels


@pytest.mark.parametrize("dataset,classes", [("skin", ["Mel", "Nevi"]), ("bone", ["AFF", "NFF"])])
def test_lab_layout_with_balanced_classes(tmp_path, dataset, classes):
    folder = make(tmp_path, dataset)
    split = load_class_split(folder)  # the "_regions"/"_markers" folders must not count as classes
    assert split.class_names == classes and split.layout == "lab"
    assert np.bincount(split.train_labels).tolist() == [4, 4]
    assert np.bincount(split.val_labels).tolist() == [2, 2]
    for path in split.train_paths + split.val_paths:
        image = read(path)
        assert image.shape == (96, 96, 3)
        assert read(sc.region_mask_path(path)).shape == (96, 96)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = make(tmp_path / "a", "bone", seed=3)
    second = make(tmp_path / "b", "bone", seed=3)
    other = make(tmp_path / "c", "bone", seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files and files == sorted(p.relative_to(second) for p in second.rglob("*.png"))
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    images = [name for name in files if name.parts[0] == "train"]
    assert any((first / n).read_bytes() != (other / n).read_bytes() for n in images)


def test_generated_once_then_reused(tmp_path):
    folder = make(tmp_path, "skin")
    image = next(folder.glob("train/Mel/*.png"))
    stamp = image.stat().st_mtime_ns
    assert make(tmp_path, "skin") == folder
    assert image.stat().st_mtime_ns == stamp
    assert json.loads((folder / "SYNTHETIC.json").read_text())["dataset"] == "skin"


def test_region_mask_covers_the_fracture(tmp_path, monkeypatch):
    """Each pixel a fracture darkens, complete or not, lies in its AFF image's stored region."""
    cracks, complete = [], []
    draw_crack = sc.draw_crack

    def recording_crack(image, rng, femur, crack_at, is_complete, *args):
        cracked = draw_crack(image, rng, femur, crack_at, is_complete, *args)
        cracks.append((image - cracked) > 0.02)
        complete.append(is_complete)
        return cracked

    monkeypatch.setattr(sc, "draw_crack", recording_crack)
    folder = make(tmp_path, "bone", n_train=12, n_val=4)
    aff = sorted(folder.glob("train/AFF/*.png")) + sorted(folder.glob("validation/AFF/*.png"))
    assert len(cracks) == len(aff) == 8  # NFF bones never get a fracture
    assert 0 < sum(complete) < 8  # both kinds are drawn
    for crack, path in zip(cracks, aff):
        region = read(sc.region_mask_path(path)) > 127
        assert crack.sum() > 3
        assert (crack & region).sum() >= 0.95 * crack.sum(), path
        assert region.mean() < 0.1  # a local region, not the whole image
    for path in folder.glob("*/NFF/*.png"):  # a normal femur: nothing to point at
        assert not (read(sc.region_mask_path(path)) > 127).any()


def test_shortcut_sets_draw_only_subtle_fractures(tmp_path, monkeypatch):
    fracture_kinds = []
    draw_crack = sc.draw_crack

    def recording_crack(image, rng, femur, crack_at, complete, fracture, size):
        fracture_kinds.append(fracture)
        return draw_crack(image, rng, femur, crack_at, complete, fracture, size)

    monkeypatch.setattr(sc, "draw_crack", recording_crack)
    make(tmp_path, "bone", n_train=8, n_val=2, shortcut=True)
    assert fracture_kinds and all(kind is sc.FRACTURES["subtle"] for kind in fracture_kinds)


def test_region_mask_is_the_darker_lesion(tmp_path):
    folder = make(tmp_path, "skin")
    for path in folder.glob("*/*/*.png"):
        gray = read(path).mean(axis=2)
        region = read(sc.region_mask_path(path)) > 127
        assert 0.02 < region.mean() < 0.6
        assert gray[region].mean() < gray[~region].mean() - 20, path


def marker_is_top(path):
    ys, _ = np.nonzero(read(sc.marker_mask_path(path)))
    return ys.mean() < read(path).shape[0] / 2


def test_marker_masks_mark_burned_in_text(tmp_path):
    folder = make(tmp_path, "bone", n_train=4, n_val=2, size=256)
    for path in folder.glob("*/*/*.png"):
        gray = read(path)[..., 0].astype(float)
        marker = read(sc.marker_mask_path(path)) > 127
        ring = cv2.dilate(marker.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        ring &= ~marker
        assert marker.any() and gray[marker].max() > 200  # bright text inside the mask
        assert gray[marker].mean() > gray[ring].mean() + 20


@pytest.mark.parametrize("shortcut", [False, True])
def test_marker_correlates_with_class_only_in_shortcut_sets(tmp_path, shortcut):
    folder = make(tmp_path, "bone", n_train=60, size=64, shortcut=shortcut)
    assert folder.name == ("Bone-shortcut-60" if shortcut else "Bone-60")
    agree = [marker_is_top(p) == (p.parent.name == "AFF") for p in folder.glob("train/*/*.png")]
    # The recorded marker class is the class whose style (AFF: "R" top left) the image carries.
    paths = sorted(folder.glob("*/*/*.png"))
    assert [name == "AFF" for name in sc.marker_classes(paths)] == [marker_is_top(p) for p in paths]
    share = np.mean(agree)
    if shortcut:
        assert 0.8 <= share < 1.0  # ~90%: a strong shortcut, but not a perfect one
    else:
        assert 0.3 <= share <= 0.7


def test_skin_gets_markers_only_in_shortcut_sets(tmp_path):
    plain = make(tmp_path, "skin")
    shortcut = make(tmp_path, "skin", shortcut=True)
    image = next(plain.glob("train/Mel/*.png"))
    assert not sc.marker_mask_path(image).exists()
    marked = next(shortcut.glob("train/Mel/*.png"))
    assert read(sc.marker_mask_path(marked)).any()


def test_unknown_dataset_is_a_user_error(tmp_path):
    from medlab.errors import UserError

    with pytest.raises(UserError, match="unknown synthetic data set"):
        sc.synthetic_class_set("lung", root=tmp_path)
