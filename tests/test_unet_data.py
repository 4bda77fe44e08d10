"""Pairing, loading, splitting and the input pipeline of the segmentation task."""

import cv2
import numpy as np
import pytest

import unet
from medlab.errors import UserError


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def lung_like_mask(size=64):
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 3, size // 2), (size // 8, size // 4), 0, 0, 360, 255, -1)
    cv2.ellipse(mask, (2 * size // 3, size // 2), (size // 8, size // 4), 0, 0, 360, 255, -1)
    return mask


def test_pairs_by_stem_whatever_the_extension_and_listing_order(tmp_path):
    for stem in ("b", "a", "c"):
        write(tmp_path / "Image" / f"{stem}.png", np.zeros((8, 8), np.uint8))
        write(tmp_path / "Mask" / f"{stem}.jpg", np.zeros((8, 8), np.uint8))
    (tmp_path / "Image" / ".DS_Store").write_text("x")
    (tmp_path / "Mask" / "notes.txt").write_text("x")
    images, masks = unet.find_pairs(tmp_path)
    assert [p.name for p in images] == ["a.png", "b.png", "c.png"]
    assert [p.stem for p in masks] == ["a", "b", "c"]


def test_unmatched_names_are_listed(tmp_path):
    write(tmp_path / "Image" / "a.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "Image" / "only_image.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "Mask" / "a.png", np.zeros((8, 8), np.uint8))
    write(tmp_path / "Mask" / "only_mask.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(UserError, match="only_image.*only_mask"):
        unet.find_pairs(tmp_path)


def test_images_of_any_depth_and_channels_become_one_unit_channel(tmp_path):
    gray16 = np.full((40, 30), 65535 // 2, np.uint16)
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 2] = 255  # red in OpenCV's BGR order
    rgba = np.dstack([np.full((20, 20, 3), 200, np.uint8), np.full((20, 20), 255, np.uint8)])
    for name, array in (("g16.png", gray16), ("rgb.png", rgb), ("rgba.png", rgba)):
        write(tmp_path / name, array)
    images = unet.load_images([tmp_path / n for n in ("g16.png", "rgb.png", "rgba.png")], 16)
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.float32
    assert images[0].mean() == pytest.approx(0.5, abs=1e-3)
    assert images[1].mean() == pytest.approx(0.299, abs=0.01)  # luminance of pure red
    assert images[2].mean() == pytest.approx(200 / 255, abs=0.01)


def test_jpeg_and_0_1_masks_load_binary_and_faithful(tmp_path):
    mask = lung_like_mask(128)
    cv2.imwrite(str(tmp_path / "m.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 60])
    write(tmp_path / "m01.png", (mask > 0).astype(np.uint8))
    warnings = []
    for name in ("m.jpg", "m01.png"):
        loaded = unet.load_mask(tmp_path / name, 64, warn=warnings.append)
        assert set(np.unique(loaded)) == {0.0, 1.0}
        reference = cv2.resize(mask, (64, 64), interpolation=cv2.INTER_AREA) >= 128
        assert np.mean(loaded[..., 0] == reference) > 0.99
    assert warnings == []


def test_images_and_masks_already_at_the_target_size_keep_their_channel(tmp_path):
    write(tmp_path / "Image" / "a.png", lung_like_mask(32))
    write(tmp_path / "Mask" / "a.png", lung_like_mask(32))
    assert unet.load_images([tmp_path / "Image" / "a.png"], 32).shape == (1, 32, 32, 1)
    masks = unet.load_masks([tmp_path / "Mask" / "a.png"], 32)
    assert masks.shape == (1, 32, 32, 1) and masks.sum() == (lung_like_mask(32) > 0).sum()


def test_multi_label_mask_gets_a_warning(tmp_path):
    mask = lung_like_mask(64)
    mask[:, 32:] //= 2  # right lung labelled 127, left 255
    write(tmp_path / "two_labels.png", mask)
    warnings = []
    unet.load_mask(tmp_path / "two_labels.png", 64, warn=warnings.append)
    assert len(warnings) == 1 and "two_labels.png" in warnings[0]


def test_split_is_seeded_disjoint_and_complete():
    train, val = unet.split_indices(50, 0.2, seed=7)
    again_train, again_val = unet.split_indices(50, 0.2, seed=7)
    assert len(val) == 10 and not set(train) & set(val) and set(train) | set(val) == set(range(50))
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, unet.split_indices(50, 0.2, seed=8)[1])


def test_folds_hold_out_every_pair_exactly_once_and_repeat_with_the_seed():
    folds = unet.fold_indices(23, 5, seed=7)
    held_out = np.concatenate([val for _, val in folds])
    assert sorted(held_out) == list(range(23)) and {len(val) for _, val in folds} == {4, 5}
    for train, val in folds:
        assert not set(train) & set(val) and set(train) | set(val) == set(range(23))
    again = unet.fold_indices(23, 5, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not np.array_equal(folds[0][1], unet.fold_indices(23, 5, seed=8)[0][1])


def pattern_pairs(count=8, size=48):
    """Images whose bright region is exactly the mask, placed off-centre so transforms move it."""
    masks = np.zeros((count, size, size, 1), np.float32)
    for i in range(count):
        masks[i, 6 + i : 20 + i, 4:16] = 1
    return masks * 0.8 + 0.1, masks


def test_augmentation_moves_image_and_mask_together_and_keeps_masks_binary():
    images, masks = pattern_pairs()
    dataset = unet.make_dataset(images, masks, batch_size=4, shuffle=True, augment=True, seed=3)
    moved = 0
    for _epoch in range(2):
        for image_batch, mask_batch in dataset:
            image_batch, mask_batch = image_batch.numpy(), mask_batch.numpy()
            assert set(np.unique(mask_batch)) <= {0.0, 1.0}
            agreement = np.mean((image_batch >= 0.5) == (mask_batch >= 0.5), axis=(1, 2, 3))
            assert agreement.min() > 0.98
            moved += sum(
                not any(np.array_equal(m, original) for original in masks) for m in mask_batch
            )
    assert moved >= 12  # nearly every augmented mask differs from all originals


def test_augmentation_differs_between_epochs_but_repeats_with_the_seed():
    images, masks = pattern_pairs()
    first = [m.numpy() for _, m in unet.make_dataset(images, masks, 8, augment=True, seed=5)]
    second = [m.numpy() for _, m in unet.make_dataset(images, masks, 8, augment=True, seed=5)]
    dataset = unet.make_dataset(images, masks, 8, augment=True, seed=5)
    epoch_one, epoch_two = ([m.numpy() for _, m in dataset] for _ in range(2))
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(epoch_one[0], epoch_two[0])


def test_validation_data_is_untouched_and_in_order():
    images, masks = pattern_pairs(count=6)
    batches = list(unet.make_dataset(images, masks, batch_size=4))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), masks)
    assert [len(b[0]) for b in batches] == [4, 2]  # the last partial batch is kept


def test_experiment_datasets_change_the_look_of_training_images_only_when_asked():
    """--augment-intensity alone: training images get another look (masks and geometry kept);
    validation images never do."""
    images, masks = pattern_pairs()
    data = {"cache": "memory", "train": (images, masks), "val": (images, masks)}
    p = {"augment": False, "augment_intensity": True, "seed": 4}
    train, val = unet.experiment_datasets(p, data, batch_size=8)
    ((image_batch, mask_batch),) = list(train)
    order = [next(i for i, m in enumerate(masks) if np.array_equal(m, seen)) for seen in mask_batch]
    changed = np.abs(image_batch.numpy() - images[order]).mean(axis=(1, 2, 3))
    assert changed.min() > 0.001  # every training image looks different, its mask is the same
    ((val_images, val_masks),) = list(val)
    np.testing.assert_array_equal(val_images, images)
    np.testing.assert_array_equal(val_masks, masks)
    plain, _ = unet.experiment_datasets({**p, "augment_intensity": False}, data, batch_size=8)
    ((plain_images, plain_masks),) = list(plain)
    order = [
        next(i for i, m in enumerate(masks) if np.array_equal(m, seen)) for seen in plain_masks
    ]
    np.testing.assert_array_equal(plain_images, images[order])
