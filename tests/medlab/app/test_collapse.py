"""Noticing a classifier that has not learnt, class weights and the named presets."""

import json

import numpy as np
import pytest
from helpers import resolved_values

import cam_vgg16
import transfer_vgg16 as tv
from medlab.app.classification import cam_run, transfer_run
from medlab.app.collapse import learning_check, not_learnt_sentence, suggested_command, try_instead
from medlab.classification import cam
from medlab.classification.train import class_weights
from medlab.synthetic.skin_bone import synthetic_class_set

TINY = "--size 32 --base 2 --epochs 1 --batch-size 8 --grid-images 4 --sanity-images 4".split()


def test_one_class_predictions_are_noticed_with_their_counts():
    check = learning_check([0, 1, 1, 0, 1], [1, 1, 1, 1, 1], ["AFF", "NFF"])
    assert check["predicts_one_class"] and check["not_learnt"]
    assert (
        check["predicted_counts"] == {"AFF": 0, "NFF": 5} and check["majority_prediction"] == "NFF"
    )
    assert not_learnt_sentence(check) == (
        "the model predicts NFF for 5 of 5 validation images: it has not learnt the task"
    )


def test_near_chance_balanced_accuracy_is_noticed_even_with_mixed_predictions():
    labels = np.array([0] * 10 + [1] * 10)
    predicted = np.array([0, 1] * 10)  # half right in each class: balanced accuracy 0.5
    check = learning_check(labels, predicted, ["a", "b"])
    assert not check["predicts_one_class"] and check["not_learnt"]
    assert "near chance" in not_learnt_sentence(check)
    learnt = learning_check(labels, labels, ["a", "b"])
    assert not learnt["not_learnt"] and not_learnt_sentence(learnt) == ""


def test_suggested_command_drops_the_flags_the_preset_sets():
    typed = {"data_dir": "my data/KNEE", "lr": 1e-4, "epochs": 30, "flip": False, "channels": 3}
    command = suggested_command("cam_vgg16.py", typed, cam_vgg16.PRESETS["recommended"])
    assert (
        command == "python cam_vgg16.py --data-dir 'my data/KNEE' --no-flip --channels 3 "
        "--preset recommended"
    )
    # The recommended preset as it is did not learn: more of the same would not help.
    assert "--preset" not in try_instead(
        "cam_vgg16.py", {"data_dir": "K"}, {"lr": 1}, "recommended"
    )
    assert "--preset recommended" in try_instead(
        "cam_vgg16.py", {"lr": 1e-4}, {"lr": 1}, "recommended"
    )


def test_advice_names_the_likely_cause_and_keeps_the_users_flags():
    preset = {"epochs": 40, "lr": 1e-3, "pooling": "avg"}
    typed = {"dataset": "bone", "epochs": 2}
    advice = try_instead("cam_vgg16.py", typed, preset, None, {"epochs": 2, "lr": 1e-3})
    assert advice.startswith("Likely cause: 2 epoch(s) are too few to learn this")
    assert "`python cam_vgg16.py --dataset bone --epochs 40`" in advice  # the user's command
    assert "Or the recommended preset: `python cam_vgg16.py --dataset bone --preset recommended`"
    assert advice.index("Likely cause") < advice.index("--preset")
    # A learning rate far from the preset's is named too; one within 30x of it is not.
    low = try_instead("x.py", {}, preset, None, {"epochs": 80, "lr": 1e-5})
    assert "learning rate of 1e-05 is too low" in low and "epoch" not in low.split(".")[0]
    fine = try_instead("x.py", {}, preset, None, {"epochs": 80, "lr": 3e-4})
    assert fine == "Try instead: `python x.py --preset recommended`."


def test_balanced_class_weights_give_each_class_the_same_total_weight():
    labels = np.array([0] * 3 + [1] * 9)
    weights = class_weights(labels, "balanced")
    assert weights[0] * 3 == pytest.approx(weights[1] * 9) == pytest.approx(6.0)
    assert class_weights(labels, "none") is None


def test_transfer_reports_which_of_its_models_has_not_learnt():
    runs = [
        {
            "seed": 0,
            "val": np.arange(4),
            "scores": {"transfer": np.full(4, 0.9), "scratch": np.array([0.1, 0.9, 0.2, 0.8])},
        }
    ]
    params = {**tv.PARAMETERS, "preset": None}
    checks, advice = transfer_run.learning_checks(
        runs, np.array([0, 1, 0, 1]), ["Mel", "Nevi"], params, {"lr": 1e-5}, tv.PRESETS
    )
    assert (
        checks["transfer"]["predicts_one_class"]
        and checks["transfer"]["predicted_counts"]["Nevi"] == 4
    )
    assert checks["transfer"]["not_learnt_message"].startswith(
        "The transfer head predicts Nevi for 4 of 4"
    )
    assert not checks["scratch"]["not_learnt"]
    assert advice == "Try instead: `python transfer_vgg16.py --lr 1e-05 --preset recommended`."
    _, advice = transfer_run.learning_checks(
        runs, np.array([0, 1, 0, 1]), ["Mel", "Nevi"], {**params, "weights": "none"}, {}, tv.PRESETS
    )
    assert advice.endswith("use --weights imagenet.")


def test_lab_preset_builds_exactly_the_handout_network_and_scaling():
    # On the synthetic set too: the preset beats the demo settings.
    params = resolved_values(cam_vgg16, ["--preset", "lab"], cam_vgg16.SYNTHETIC_DEMO)
    assert (params["lr"], params["epochs"], params["batch_size"], params["class_weight"]) == (
        1e-5,
        80,
        8,
        "none",
    )
    assert params["zoom"] == 0 and params["colour_jitter"] == 0 and not params["colour_constancy"]
    model = cam.build_model(params)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert model.input_shape == (None, 128, 128, 1) and model.layers[1].name == "block1_conv1"
    assert "Rescaling" not in kinds and "BatchNormalization" not in kinds and "Flatten" in kinds
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [0.4] * 3
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [
        64,
        64,
        64,
        2,
    ]
    assert sum(type(layer).__name__ == "Conv2D" for layer in model.layers) == 13
    assert model.layers[-1].activation.__name__ == "softmax"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)
    assert model.loss == "categorical_crossentropy"
    flags = resolved_values(cam_vgg16, ["--preset", "lab", "--epochs", "3"])
    assert flags["epochs"] == 3 and flags["lr"] == 1e-5  # flags win over the preset


def test_lab_preset_feeds_pixels_scaled_by_1_over_255(tmp_path):
    import cv2

    from medlab.classification.data import load_arrays

    image = np.full((40, 40), 255, np.uint8)
    image[:20] = 51
    cv2.imwrite(str(tmp_path / "a.png"), image)
    pixels = load_arrays([tmp_path / "a.png"], (40, 40), 1)
    assert pixels.min() == pytest.approx(51 / 255) and pixels.max() == pytest.approx(1.0)


def test_transfer_lab_preset_builds_the_handout_scratch_model():
    model = tv.build_scratch({**tv.PARAMETERS, **tv.PRESETS["lab"]})
    kinds = [type(layer).__name__ for layer in model.layers]
    assert model.input_shape == (None, 128, 128, 1) and "Rescaling" not in kinds
    assert "BatchNormalization" not in kinds and "Flatten" in kinds and kinds.count("Dropout") == 3


def test_a_model_that_predicts_one_class_is_reported(tmp_path, monkeypatch, capsys):
    """The run's model always answers AFF: metrics.json, summary and console must say so."""
    data = synthetic_class_set("bone", n_train=8, n_val=8, size=64, root=tmp_path / "data")
    build = cam.build_model

    def always_first_class(params, *args, **kwargs):
        model = build(params, *args, **kwargs)
        kernel, _ = model.get_layer("prediction").get_weights()
        model.get_layer("prediction").set_weights(
            [np.zeros_like(kernel), np.array([8.0, -8.0], np.float32)]
        )
        return model

    monkeypatch.setattr(cam, "build_model", always_first_class)
    run_dir = cam_vgg16.main(
        ["--data-dir", str(data), *TINY, "--lr", "1e-9", "--out", str(tmp_path / "out")]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["predicts_one_class"] is True and metrics["not_learnt"] is True
    assert metrics["predicted_counts"] == {"AFF": 8, "NFF": 0}
    assert metrics["val_balanced_accuracy"] == pytest.approx(0.5)
    assert (
        metrics["val_sensitivity"] == 1.0 and metrics["val_specificity"] == 0.0
    )  # AFF is the positive class
    sentence = "The model predicts AFF for 8 of 8 validation images: it has not learnt the task"
    summary = (run_dir / "summary.md").read_text()
    assert f"**{sentence}**" in summary and "--preset recommended" in summary
    # First the likely causes, with the user's own command fixed (every other flag kept), then
    # the preset, which sets epochs, batch size and lr itself: the typed values of those go.
    out = tmp_path / "out"
    fixed = " ".join(TINY).replace("--epochs 1", "--epochs 40 --lr 0.001")  # in --help's order
    kept = " ".join(TINY).replace(" --epochs 1", "").replace(" --batch-size 8", "")
    assert metrics["try_instead"] == (
        "Likely cause: 1 epoch(s) are too few to learn this (--epochs 40 in the preset); a "
        "learning rate of 1e-09 is too low (--lr 0.001 in the preset). Try your command with "
        f"that changed: `python cam_vgg16.py --data-dir {data} {fixed} --out {out}`. "
        f"Or the recommended preset: `python cam_vgg16.py --data-dir {data} {kept} --out {out} "
        "--preset recommended` (it sets --epochs, --lr, --batch-size itself, so your values for "
        "them are left out)."
    )
    assert sentence in capsys.readouterr().out


def test_recommended_preset_builds_colour_constancy_and_recolours_training_photos():
    params = resolved_values(cam_vgg16, ["--preset", "recommended", "--channels", "3"])
    params = {**params, "size": 32, "base": 2}
    model = cam.build_model(params, steps_per_epoch=1)
    assert model.layers[1].name == "colour_constancy" and model.layers[2].name == "centre_pixels"
    flat = np.full((4, 32, 32, 3), 0.5, np.float32)  # geometry cannot change a flat image
    (batch, _), *_ = cam.training_dataset(flat, np.array([0, 1, 0, 1]), params)
    assert np.ptp(batch.numpy().reshape(4, -1).mean(axis=1)) > 0.01  # each its own brightness
    described = cam_run.describe_augmentation(params)
    assert "zoom 0.2" in described and "colour jitter 0.2" in described
    assert "colour constancy" in cam_run.describe_network(params)
    assert "colour constancy" not in cam_run.describe_network({**params, "channels": 1})
