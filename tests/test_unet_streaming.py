"""--cache memory|disk|none: streaming gives the pairs, split and augmentation of preloading."""

import json

import cv2
import numpy as np
import pytest
from helpers import xray_folder

import main_segmentation
import unet
from medlab.errors import UserError

SIZE = 32


def load_pairs(data_dir, size, val_fraction, seed, cache="memory", memory_budget_gb=4.0):
    """The pairs of `data_dir` split into training and validation, as main_segmentation.py
    loads them (`unet.load_every_pair`, then `unet.split_pairs` of one seeded split)."""
    every = unet.load_every_pair(data_dir, size, cache, memory_budget_gb)
    return unet.split_pairs(every, *unet.split_indices(len(every["names"]), val_fraction, seed))


def mixed_format_folder(root, count=10):
    """Pairs in several formats (8/16-bit, RGB, JPEG masks): streaming must use the same loaders."""
    data = xray_folder(root, count=count)
    image = cv2.imread(str(data / "Image" / "p1.png"), cv2.IMREAD_GRAYSCALE)
    (data / "Image" / "p1.png").unlink()
    cv2.imwrite(str(data / "Image" / "p1.png"), image.astype(np.uint16) * 257)
    cv2.imwrite(
        str(data / "Image" / "p2.bmp"),
        cv2.cvtColor(cv2.imread(str(data / "Image" / "p2.png")), cv2.COLOR_BGR2RGB),
    )
    (data / "Image" / "p2.png").unlink()
    mask = cv2.imread(str(data / "Mask" / "p3.png"), cv2.IMREAD_GRAYSCALE)
    (data / "Mask" / "p3.png").unlink()
    cv2.imwrite(str(data / "Mask" / "p3.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return data


def batches(dataset, epochs=1):
    return [[(image.numpy(), mask.numpy()) for image, mask in dataset] for _ in range(epochs)]


def pipelines(data_dir, cache, cache_dir, augment=False):
    data = load_pairs(data_dir, SIZE, 0.3, seed=1, cache=cache)
    train, val = unet.experiment_datasets(
        {"augment": augment, "augment_intensity": False, "seed": 4},
        data,
        batch_size=3,
        cache_dir=cache_dir,
    )
    return data, train, val


def assert_same_batches(expected, actual):
    assert len(expected) == len(actual)
    for (image, mask), (other_image, other_mask) in zip(expected, actual):
        np.testing.assert_array_equal(image, other_image)
        np.testing.assert_array_equal(mask, other_mask)


@pytest.mark.parametrize("cache", ["none", "disk"])
def test_streamed_datasets_yield_the_batches_of_preloaded_arrays(tmp_path, cache):
    data_dir = mixed_format_folder(tmp_path)
    memory, memory_train, memory_val = pipelines(data_dir, "memory", None, augment=True)
    streamed, train, val = pipelines(data_dir, cache, tmp_path, augment=True)
    assert memory["cache"] == "memory" and streamed["cache"] == cache
    assert isinstance(streamed["train"][0][0], type(data_dir))  # paths, not pixels
    assert streamed["val_names"] == memory["val_names"]
    for _ in range(2):  # the disk cache is read back
        assert_same_batches(batches(memory_val)[0], batches(val)[0])
    expected = batches(memory_train, epochs=2)
    for epoch, actual in enumerate(batches(train, epochs=2)):  # same shuffle and augmentation
        assert_same_batches(expected[epoch], actual)
    assert not np.array_equal(expected[0][0][1], expected[1][0][1])  # epochs do differ
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(("train", "val"))} == (
        {"train.index", "train.data-00000-of-00001", "val.index", "val.data-00000-of-00001"}
        if cache == "disk"
        else set()
    )


def test_auto_streams_when_preloading_would_exceed_the_memory_budget(tmp_path, capsys):
    data_dir = xray_folder(tmp_path, count=4)
    assert (
        load_pairs(data_dir, SIZE, 0.25, 0, cache="auto", memory_budget_gb=1.0)["cache"] == "memory"
    )
    pair_gb = unet.PRELOAD_COPIES * unet.decoded_gb(1, SIZE)
    assert (
        load_pairs(data_dir, SIZE, 0.25, 0, cache="auto", memory_budget_gb=3.5 * pair_gb)["cache"]
        == "none"
    )
    assert "over the" in capsys.readouterr().out


def test_streaming_refuses_an_unreadable_file_before_any_work(tmp_path):
    data_dir = xray_folder(tmp_path, count=4)
    (data_dir / "Mask" / "p2.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image .*p2.png"):
        load_pairs(data_dir, SIZE, 0.25, 0, cache="none")


def test_a_disk_cached_run_writes_its_outputs_and_removes_the_cache(tmp_path):
    data_dir = xray_folder(tmp_path, count=6)
    flags = "--experiments 4a --epochs 1 --size 32 --depth 2 --base 2 --batch-size 2 --cache disk"
    main_segmentation.train(
        ["--data-dir", str(data_dir), *flags.split(), "--out", str(tmp_path / "out")]
    )
    (summary,) = (p for p in (tmp_path / "out").iterdir() if p.name.endswith("-summary"))
    (run,) = (p for p in (tmp_path / "out").iterdir() if p.name.endswith("-4a"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation_images"] == 1 and 0 <= metrics["val_dice"] <= 1
    assert json.loads((run / "config.json").read_text())["parameters"]["cache_used"] == "disk"
    assert (run / "overlays.png").is_file() and not (summary / "cache").exists()
