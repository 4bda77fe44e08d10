"""Mirrored test-time augmentation and ensembles of saved U-Nets: `unet.predict_probabilities`
and `predict` / `evaluate` with several models, on tiny hand-made models whose output is known."""

import json

import cv2
import keras
import numpy as np
import pytest
from scipy.special import expit

import unet
from medlab.app.segmentation import evaluate_command, predict_command
from medlab.app.segmentation.ensemble import model_files, split_models
from medlab.errors import UserError

SIZE = 16


def pixel_model(weight, bias, kernel=None):
    """sigmoid(conv(image)): a 1x1 convolution (weight, bias), or the 1x3 `kernel` along x."""
    inputs = keras.Input((SIZE, SIZE, 1))
    shape = (1, 1) if kernel is None else (1, len(kernel))
    conv = keras.layers.Conv2D(1, shape, padding="same", activation="sigmoid", dtype="float32")
    model = keras.Model(inputs, conv(inputs))
    values = np.full(shape, weight) if kernel is None else np.array([kernel], float)
    conv.set_weights([values.reshape(*shape, 1, 1).astype(np.float32), np.array([bias], "f")])
    return model


def quadrant_image():
    """Rows 0-3 black, 4-7 grey (0.5), 8-15 white: a 16x16 image, and its white half as truth."""
    image = np.zeros((SIZE, SIZE), np.float32)
    image[4:8], image[8:] = 0.5, 1.0
    return image[None, ..., None], (image == 1.0).astype(np.float32)[None, ..., None]


def test_mirroring_a_flip_equivariant_model_changes_nothing():
    model = pixel_model(6.0, -3.0)  # a 1x1 convolution treats every pixel alike
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 1)).astype(np.float32)
    plain = unet.predict_probabilities(model, images)
    np.testing.assert_allclose(unet.predict_probabilities(model, images, tta=True), plain, 1e-6)


def test_mirroring_an_asymmetric_model_averages_it_with_its_mirror_image():
    # Each output pixel looks at its right-hand neighbour (zero beyond the edge); mirrored, the
    # image's left-hand neighbour: TTA is the mean of the two, computed here by hand.
    model = pixel_model(None, 0.0, kernel=[0.0, 0.0, 4.0])
    image = np.random.default_rng(1).random((1, SIZE, SIZE, 1)).astype(np.float32)
    x = image[0, ..., 0]
    right = np.pad(x, ((0, 0), (0, 1)))[:, 1:]
    left = np.pad(x, ((0, 0), (1, 0)))[:, :-1]
    expected = (expit(4 * right) + expit(4 * left)) / 2
    plain = unet.predict_probabilities(model, image)[0, ..., 0]
    mirrored = unet.predict_probabilities(model, image, tta=True)[0, ..., 0]
    np.testing.assert_allclose(plain, expit(4 * right), atol=1e-6)
    np.testing.assert_allclose(mirrored, expected, atol=1e-6)
    assert not np.allclose(mirrored, plain, atol=1e-3)


def test_an_ensemble_averages_the_probabilities_of_its_models():
    first, second = pixel_model(6.0, -3.0), pixel_model(-2.0, 1.0)
    images = np.random.default_rng(2).random((3, SIZE, SIZE, 1)).astype(np.float32)
    mean = (first.predict(images, verbose=0) + second.predict(images, verbose=0)) / 2
    np.testing.assert_allclose(unet.predict_probabilities([first, second], images), mean, 1e-6)


def ensemble_pair():
    """Two models whose mean finds exactly the white half of `quadrant_image`, though neither does:
    `sharp` marks grey and white (0.88, 1.0), `timid` adds 0.05 everywhere; their means are 0.06
    (black), 0.46 (grey) and 0.52 (white)."""
    return pixel_model(8.0, -2.0), pixel_model(0.0, -3.0)


def test_evaluate_scores_the_ensemble_mean_not_its_members():
    image, truth = quadrant_image()
    sharp, timid = ensemble_pair()
    # sharp alone: 12 rows against 8 true rows, Dice 2*8/(12+8) = 0.8; timid alone marks nothing.
    assert unet.evaluate(sharp, image, truth)[0]["dice"] == pytest.approx([0.8])
    assert unet.evaluate(timid, image, truth)[0]["dice"] == pytest.approx([0.0])
    assert unet.evaluate([sharp, timid], image, truth)[0]["dice"] == pytest.approx([1.0])


def pair_folder(root):
    image, truth = quadrant_image()
    for folder, array in (("Image", image), ("Mask", truth)):
        (root / folder).mkdir(parents=True)
        cv2.imwrite(str(root / folder / "chest.png"), np.uint8(np.round(array[0] * 255)))
    return root


def test_evaluate_and_predict_use_every_fold_model_of_an_experiment_folder(tmp_path):
    """An experiment folder of a --folds run holds fold<k>/model.keras: evaluate and predict
    average them (fold10 after fold2), and evaluate's Dice is the ensemble's."""
    experiment = tmp_path / "run-best"
    for k, model in zip((2, 10), ensemble_pair()):
        (experiment / f"fold{k}").mkdir(parents=True)
        model.save(experiment / f"fold{k}" / "model.keras")
        (experiment / f"fold{k}" / "metrics.json").write_text("{}")  # a finished fold
    data = pair_folder(tmp_path / "pairs")
    assert model_files([experiment]) == [
        experiment / "fold2/model.keras",
        experiment / "fold10/model.keras",
    ]
    evaluate_command(
        [str(experiment), "--data-dir", str(data), "--out", str(tmp_path / "e")],
        {"batch_size": 2, "out": "", "memory_budget_gb": 1.0},
    )
    (folder,) = (tmp_path / "e").iterdir()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["dice"] == pytest.approx(1.0)
    assert metrics["models"] == [
        str(experiment / "fold2/model.keras"),
        str(experiment / "fold10/model.keras"),
    ]
    assert metrics["tta"] is False

    predict_command(
        [str(experiment), str(data / "Image/chest.png"), "--tta", "--out", str(tmp_path / "p")],
        {"out": ""},
    )
    (folder,) = (tmp_path / "p").iterdir()
    mask = cv2.imread(str(folder / "chest_mask.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(mask > 0, quadrant_image()[1][0, ..., 0] > 0)


def test_evaluate_makes_masks_as_the_experiments_did_unless_a_flag_says_otherwise(tmp_path):
    """The sidecars' tta and postprocess are evaluate's defaults; models that disagree on one
    need its flag, in one line, before any folder is made."""
    from medlab.app.sidecars import write_sidecar

    def sidecar(path, postprocess):
        write_sidecar(
            path,
            **{"channels": 1, "input_scale": 1.0, "class_names": ["background", "lung"]},
            **{"postprocess": postprocess, "tta": True, "made_by": "main_segmentation.py"},
        )

    data, paths = pair_folder(tmp_path / "pairs"), []
    for name, model in zip(("sharp", "timid"), ensemble_pair()):
        paths.append(tmp_path / f"{name}.keras")
        model.save(paths[-1])
        sidecar(paths[-1], postprocess=False)
    settings = {"batch_size": 2, "out": str(tmp_path / "e"), "memory_budget_gb": 1.0}

    def evaluated(*flags):
        evaluate_command([*map(str, paths), "--data-dir", str(data), *flags], settings)
        folder = max((tmp_path / "e").iterdir())
        return json.loads((folder / "metrics.json").read_text())

    assert evaluated()["tta"] is True
    assert evaluated("--no-tta")["tta"] is False
    sidecar(paths[1], postprocess=True)
    with pytest.raises(UserError, match="with and without --postprocess; say which"):
        evaluated()
    assert len(list((tmp_path / "e").iterdir())) == 2
    assert evaluated("--postprocess")["postprocess"] is True


def test_models_of_different_input_sizes_are_refused_in_one_line(tmp_path):
    small = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1)])
    small.save(tmp_path / "small.keras")
    pixel_model(1.0, 0.0).save(tmp_path / "big.keras")
    data = pair_folder(tmp_path / "pairs")
    with pytest.raises(UserError, match=r"small.keras takes 8x8 images .*big.keras takes 16x16"):
        evaluate_command(
            [str(tmp_path / "big.keras"), str(tmp_path / "small.keras"), "--data-dir", str(data)],
            {"batch_size": 2, "out": str(tmp_path), "memory_budget_gb": 1.0},
        )
    assert not list(tmp_path.glob("*-evaluate"))


def test_predict_tells_models_from_images_and_needs_an_image(tmp_path):
    run, other = tmp_path / "run", tmp_path / "data"
    (run / "fold1").mkdir(parents=True)
    (run / "fold1" / "model.keras").touch()
    other.mkdir()  # no model in it: taken for an image, and refused as one when decoded
    assert split_models("a.keras", ["b.keras", str(run), str(other), "y.keras"]) == (
        ["a.keras", "b.keras", str(run)],
        [str(other), "y.keras"],
    )
    with pytest.raises(UserError, match="no image after the model"):
        split_models("a.keras", ["b.keras"])
    with pytest.raises(UserError, match="data holds no model.keras and no fold"):
        model_files([other])


def test_held_out_scores_each_image_with_the_fold_model_that_validated_on_it(tmp_path):
    """--held-out: fold1 (sharp) validated on a.png, fold2 (timid) on b.png; each image is scored
    by its own fold model alone (0.8 and 0.0), not by their mean (1.0 on both)."""
    image, truth = quadrant_image()
    data = tmp_path / "pairs"
    for folder, array in (("Image", image), ("Mask", truth)):
        (data / folder).mkdir(parents=True)
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(data / folder / name), np.uint8(np.round(array[0] * 255)))
    experiment = tmp_path / "run-4a"
    for k, (model, name) in enumerate(zip(ensemble_pair(), ("a.png", "b.png")), 1):
        (experiment / f"fold{k}").mkdir(parents=True)
        model.save(experiment / f"fold{k}" / "model.keras")
        (experiment / f"fold{k}" / "metrics.json").write_text("{}")  # a finished fold
        (experiment / f"fold{k}" / "per_image.csv").write_text(f"image,dice\n{name},0\n")
    argv = [str(experiment), "--data-dir", str(data), "--held-out", "--out", str(tmp_path / "e")]
    evaluate_command(argv, {"batch_size": 2, "out": "", "memory_budget_gb": 1.0})
    (folder,) = (tmp_path / "e").iterdir()
    rows = (folder / "per_image.csv").read_text().splitlines()[1:]
    dice = {row.split(",")[0]: float(row.split(",")[1]) for row in rows}
    assert dice == pytest.approx({"a.png": 0.8, "b.png": 0.0})

    (experiment / "fold2" / "per_image.csv").write_text("image,dice\nelsewhere.png,0\n")
    with pytest.raises(UserError, match="1 image\\(s\\) of .*fold2.per_image.csv are not pairs"):
        evaluate_command(
            [*argv[:-1], str(tmp_path / "f")], {"batch_size": 2, "out": "", "memory_budget_gb": 1.0}
        )
    assert not (tmp_path / "f").exists()
