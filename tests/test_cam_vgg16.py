"""cam_vgg16.py end to end on a tiny synthetic set, the explain command and one-line errors.

One tiny training run (module fixture) feeds the output checks and the `explain` cases, so the
file stays fast: TensorFlow starts in a subprocess only for the runs a user would type.
"""

import json
import math

import cv2
import numpy as np
import pytest
from helpers import experiment_in, images_in, resolved_values, script_of, tensorboard_events

import cam_vgg16
from medlab.app.classification import cam_run
from medlab.classification import cam
from medlab.classification.markers import marker_outcome, marker_test
from medlab.synthetic.skin_bone import synthetic_class_set

TINY = "--size 32 --base 2 --epochs 2 --batch-size 8 --grid-images 4 --sanity-images 4".split()
OUTPUTS = [
    "config.json",
    "history.csv",
    "curves.png",
    "cam_grid.png",
    "class_mean_cam.png",
    "randomisation.png",
    "model.keras",
    "metrics.json",
    "sanity.json",
    "summary.md",
]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A synthetic Bone set with region and marker masks, 8 + 8 images of 64x64."""
    return synthetic_class_set(
        "bone", n_train=8, n_val=8, size=64, root=tmp_path_factory.mktemp("data")
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_set, tmp_path_factory):
    from helpers import run_script

    out = tmp_path_factory.mktemp("out")
    result = run_script("cam_vgg16.py", "--data-dir", tiny_set, *TINY, "--out", out, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list(out.iterdir())
    assert len(runs) == 1
    return runs[0], result


def test_training_run_writes_every_output(tiny_run):
    run_dir, result = tiny_run
    for name in OUTPUTS:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "val_accuracy",
        "val_auc",
        "pointing_game",
        "energy_inside_region",
        "marker_pointing_game",
        "randomisation_correlation",
        "class_map_correlation",
        "marker_test",
    ):
        assert key in metrics, key
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["n_val"] == 8
    assert tensorboard_events(run_dir / "tensorboard" / "train")["epoch_loss"] == [0, 1]
    validation = run_dir / "tensorboard" / "validation"  # the session beside its curves
    assert {"_hparams_/session_start_info", "final/val_auc"} <= set(tensorboard_events(validation))
    assert images_in(validation)["Grad-CAM grid"] == [(2, 1)]
    experiment = experiment_in(run_dir.parent)  # the task's HParams experiment, one in --out
    assert "final/val_auc" in [m.name.tag for m in experiment.metric_infos]
    assert metrics["layer"] == "Last_ConvLayer" and metrics["cam_resolution"] == "2x2"
    # Region masks were found: the marker is scored on every correctly classified image, the
    # fracture region only on AFF images (a normal femur has no region to point at).
    assert metrics["marker_pointing_game_by_class"]["all"]["n"] == round(
        metrics["val_accuracy"] * 8
    )
    regions = metrics["pointing_game_by_class"]
    assert regions["NFF"]["n"] == 0 and regions["all"]["n"] == regions["AFF"]["n"]
    assert metrics["region_masks"] is True
    # The set records each image's marker class, so the marker test splits all 8 images.
    test = metrics["marker_test"]
    assert (
        test["marker_agrees"]["n"] + test["marker_contradicts"]["n"] == 8
        and 0 <= test["p_value"] <= 1
    )
    sanity = json.loads((run_dir / "sanity.json").read_text())
    assert sanity["randomisation_cascade"][0]["randomised_down_to"] == "prediction"
    assert len(sanity["randomisation_cascade"]) == 17  # 13 convolutions + 4 dense layers
    config = json.loads((run_dir / "config.json").read_text())
    assert config["parameters"]["epochs"] == 2 and config["parameters"]["lr"] == 1e-5  # lab default
    assert config["parameters"]["class_names"] == ["AFF", "NFF"]
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    summary = (run_dir / "summary.md").read_text()
    for figure in ("cam_grid.png", "curves.png", "class_mean_cam.png", "randomisation.png"):
        assert f"({figure})" in summary
    assert "SYNTHETIC" not in result.stdout  # --data-dir is the user's data: no demo banner


def test_explain_writes_overlays_at_the_original_size(tiny_run, tiny_set, tmp_path, capsys):
    run_dir, _ = tiny_run
    image = sorted((tiny_set / "validation" / "AFF").glob("*.png"))[0]
    cam_vgg16.main(["explain", str(run_dir / "model.keras"), str(image), "--out", str(tmp_path)])
    overlay = cv2.imread(str(tmp_path / f"{image.stem}_cam.png"))
    # The image's size, not the model's (a 64 px image is enlarged to 360 px so that its title
    # fits), under a 50 px band that names the predicted class and its probability.
    assert overlay is not None and overlay.shape == (360 + 50, 360, 3)
    out = capsys.readouterr().out
    assert (
        "predicted AFF" in out or "predicted NFF" in out
    )  # class names from the run's config.json


def expect_user_error(capsys, argv, message):
    """Run the script in-process: exit code 2 and one line on stderr that contains `message`."""
    with pytest.raises(SystemExit) as exit_info:
        cam_vgg16.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.parametrize(
    "layer,message", [("nope", "no layer named 'nope'"), ("dense1", "is not convolutional")]
)
def test_explain_rejects_bad_layers(tiny_run, tiny_set, capsys, layer, message):
    run_dir, _ = tiny_run
    image = sorted((tiny_set / "validation" / "NFF").glob("*.png"))[0]
    expect_user_error(
        capsys, ["explain", str(run_dir / "model.keras"), str(image), "--layer", layer], message
    )


def test_explain_rejects_a_class_the_model_lacks_before_making_a_folder(
    tiny_run, tiny_set, tmp_path, capsys
):
    run_dir, _ = tiny_run
    image = sorted((tiny_set / "validation" / "NFF").glob("*.png"))[0]
    out = tmp_path / "never"
    argv = ["explain", str(run_dir / "model.keras"), str(image), "--class", "3", "--out", str(out)]
    expect_user_error(capsys, argv, "has 2 classes; pass 0-1")
    assert not out.exists()


def test_explain_loads_a_model_with_the_colour_constancy_layer(tmp_path, tiny_set):
    """As a user runs it: in a fresh process the custom layer must be known before loading."""
    from helpers import run_script

    from medlab.classification.vgg import build_vgg16_style

    model = build_vgg16_style((32, 32, 3), base=2, pooling="avg", colour_constancy=True)
    model.save(tmp_path / "colour.keras")
    image = next((tiny_set / "validation" / "AFF").iterdir())
    out = tmp_path / "maps"
    # Saved without its settings (.json), so the pixel scale is given (as every command needs).
    model_file = tmp_path / "colour.keras"
    result = run_script("cam_vgg16.py", "explain", model_file, image, "--scale", "1", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / f"{image.stem}_cam.png").is_file()


def test_explain_rejects_a_model_that_does_not_load(tmp_path, tiny_set, capsys):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a keras file")
    image = str(next((tiny_set / "validation" / "AFF").glob("*.png")))
    expect_user_error(capsys, ["explain", str(broken), image], "cannot load model")
    expect_user_error(capsys, ["explain", str(tmp_path / "missing.keras"), image], "does not exist")


def write_png(path, value=128, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size), value, np.uint8))


def two_class_folder(root):
    for split in ("train", "validation"):
        for name in ("A", "B"):
            for i in range(2):
                write_png(root / split / name / f"{i}.png", value=60 + 100 * (name == "B"))
    return root


def test_missing_folder_exits_2_without_traceback(tmp_path, script):
    result = script("cam_vgg16.py", "--data-dir", tmp_path / "missing")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: data folder")
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_one_class_exits_2(tmp_path, capsys):
    write_png(tmp_path / "one" / "A" / "a.png")
    expect_user_error(capsys, ["--data-dir", str(tmp_path / "one")], "exactly two class folders")


def test_corrupt_image_exits_2(tmp_path, capsys):
    root = two_class_folder(tmp_path / "set")
    (root / "train" / "A" / "broken.png").write_bytes(b"\x89PNG garbage")
    expect_user_error(
        capsys,
        ["--data-dir", str(root), "--out", str(tmp_path / "out")] + TINY,
        "cannot read image",
    )


def test_training_rejects_a_bad_layer_before_training(tmp_path, capsys):
    root = two_class_folder(tmp_path / "set")
    out = tmp_path / "out"
    expect_user_error(
        capsys,
        ["--data-dir", str(root), "--out", str(out), "--layer", "flatten"] + TINY,
        "is not convolutional",
    )
    assert not out.exists()  # no half-filled run folder


def test_shortcut_needs_the_synthetic_set(tmp_path, capsys):
    root = two_class_folder(tmp_path / "set")
    expect_user_error(capsys, ["--data-dir", str(root), "--shortcut"], "--shortcut")


def demo_model_params(**changes):
    params = {
        **cam_vgg16.PARAMETERS,
        **cam_vgg16.SYNTHETIC_DEMO,
        "size": 32,
        "base": 2,
        "epochs": 3,
    }
    return {**params, **changes}


def test_demo_model_options_change_the_lab_network_where_documented():
    from medlab.classification.gradcam import GradCAM

    lab = cam.build_model({**cam_vgg16.PARAMETERS, "size": 32, "base": 2})
    demo = cam.build_model(demo_model_params(), steps_per_epoch=4)
    lab_kinds = [type(layer).__name__ for layer in lab.layers]
    demo_kinds = [type(layer).__name__ for layer in demo.layers]
    assert (
        "Flatten" in lab_kinds
        and lab_kinds.count("Dropout") == 3
        and "BatchNormalization" not in lab_kinds
    )
    assert (
        "GlobalMaxPooling2D" in demo_kinds
        and "Flatten" not in demo_kinds
        and "Dropout" not in demo_kinds
    )
    assert demo_kinds.count("BatchNormalization") == demo_kinds.count("Conv2D") == 13
    assert demo_kinds.count("Dense") == lab_kinds.count("Dense") == 4  # 3 x Dense(64) + the softmax
    # Batch norm follows the ReLU, so the explained layer still outputs rectified maps.
    last = demo.get_layer("Last_ConvLayer")
    assert last.get_config()["activation"] == "relu"
    assert type(demo.layers[demo.layers.index(last) + 1]).__name__ == "BatchNormalization"
    maps, _, _ = GradCAM(demo)(np.random.rand(2, 32, 32, 1))
    assert maps.shape == (2, 2, 2) and np.isfinite(maps).all()


def test_cosine_schedule_decays_to_zero_over_the_run():
    import keras

    model = cam.build_model(demo_model_params(lr=1e-3, epochs=3), steps_per_epoch=5)
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(8)) == pytest.approx(5e-4, rel=0.2)
    assert float(schedule(15)) == pytest.approx(0.0, abs=1e-9)  # 3 epochs x 5 steps
    constant = cam.build_model(demo_model_params(lr_schedule="constant"))
    assert float(constant.optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(
        ValueError, match="number of training steps"
    ):  # else it would decay to 0 after `epochs` steps
        cam.build_model(demo_model_params())


def test_pointing_game_leaves_out_images_without_a_region():
    cams = np.zeros((3, 16, 16))
    cams[:, 2, 2] = 1.0  # every map peaks at (2, 2)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, :4, :4] = True  # hit
    masks[1, 10:, 10:] = True  # miss
    # masks[2] is empty: nothing to point at, so it must not count as a miss
    scores = cam.faithfulness(cams, masks, tolerance=0)
    assert scores["n"] == 2 and scores["hit_rate"] == 0.5
    assert cam.faithfulness(cams[:0], masks[:0], tolerance=0)["n"] == 0  # e.g. no correct AFF


def resolve(argv, synthetic):
    """The run's parameters as cam_vgg16.py resolves them from `argv`."""
    shortcut = "--shortcut" in argv
    demo = cam_vgg16.SHORTCUT_DEMO if shortcut else cam_vgg16.SYNTHETIC_DEMO
    return resolved_values(cam_vgg16, argv, demo if synthetic else None)


def test_demo_settings_plain_demo_gets_the_variant_shortcut_demo_the_lab_network():
    parse = lambda *argv: resolve(list(argv), synthetic=True)
    plain, shortcut = parse(), parse("--shortcut")
    assert plain["batch_norm"] and plain["pooling"] == "max" and plain["dropout"] == 0.0
    assert (
        not shortcut["batch_norm"]
        and shortcut["pooling"] == "flatten"
        and shortcut["dropout"] == 0.4
    )
    assert parse("--pooling", "avg", "--epochs", "3")["pooling"] == "avg"  # flags still win
    real = resolve([], synthetic=False)
    assert real["epochs"] == 80 and real["lr"] == 1e-5 and real["pooling"] == "flatten"  # the lab's


def test_marker_test_compares_images_whose_marker_lies_with_the_others():
    labels = np.repeat([0, 1], 20)
    marker_classes = labels.copy()
    marker_classes[[0, 1, 2, 3, 20, 21]] = 1 - labels[[0, 1, 2, 3, 20, 21]]  # 6 markers lie
    reads_marker = marker_classes == labels  # right exactly where the marker tells the truth
    test = marker_test(labels, reads_marker, marker_classes)
    assert test["marker_contradicts"] == {"n": 6, "accuracy": 0.0}
    assert test["marker_agrees"] == {"n": 34, "accuracy": 1.0}
    assert test["p_value"] == pytest.approx(1 / math.comb(40, 6))  # all 6 misses among the 6 liars
    assert marker_outcome(test) == "relies"
    assert "relies on the text marker" in cam_run.marker_sentence(test)
    honest = marker_test(labels, np.ones(40, bool), marker_classes)
    assert honest["p_value"] == 1.0 and marker_outcome(honest) == "no evidence"
    assert marker_test(labels, np.ones(40, bool), None) is None  # real data: no markers known


def test_marker_test_needs_both_groups_and_enough_evidence():
    labels = np.repeat([0, 1], 20)
    untestable = marker_test(labels, np.ones(40, bool), labels)  # no marker lies
    assert marker_outcome(untestable) == "untestable"
    assert "needs images" in cam_run.marker_sentence(untestable)
    # One wrong image of two liars, at 80% accuracy elsewhere: a gap, but not significant.
    marker_classes = labels.copy()
    marker_classes[[0, 20]] = 1 - labels[[0, 20]]
    correct = np.ones(40, bool)
    correct[[0, 5, 6, 7, 25, 26, 27, 28]] = False
    weak = marker_test(labels, correct, marker_classes)
    assert weak["marker_contradicts"]["accuracy"] == 0.5 and weak["p_value"] > 0.01
    assert marker_outcome(weak) == "no evidence"


def test_the_synthetic_banner_shows_the_presets_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/Bone here: the synthetic set is chosen
    monkeypatch.setattr(cam_run, "make_demo_set", lambda dataset, shortcut: tmp_path)
    folder, demo = cam_run.locate_data(script_of(cam_vgg16), {"epochs": 3}, "lab")
    banner = capsys.readouterr().out
    assert folder == tmp_path and demo == cam_vgg16.SYNTHETIC_DEMO
    assert "epochs=3" in banner and "lr=1e-05" in banner and "pooling=flatten" in banner, banner


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--zoom", "1.5"], r"--zoom 1.5 is out of range \[0, 1\)"),
        (["--colour-jitter", "-0.1"], r"--colour-jitter -0.1 is out of range \[0, 1\)"),
    ],
)
def test_augmentation_strengths_out_of_range_are_refused(flags, message):
    from medlab.errors import UserError

    with pytest.raises(UserError, match=message):
        resolve(flags, synthetic=False)


def test_the_defaults_are_the_handouts_and_the_lab_preset_changes_nothing():
    """docs/lab.md, Task 3: 128x128x1 pixels in [0, 1] (no centring layer), Flatten, dropout 0.4,
    Adam 1e-5, batch 8, 80 epochs, rotation 10, shift 0.1, horizontal flip."""
    real = resolve([], synthetic=False)
    handout = {"size": 128, "channels": 1, "centre": False, "pooling": "flatten", "dropout": 0.4}
    handout.update(lr=1e-5, batch_size=8, epochs=80, rotation=10.0, shift=0.1, flip=True)
    assert {name: real[name] for name in handout} == handout
    assert resolve(["--preset", "lab"], synthetic=False) == real
    # On the demo set the lab preset undoes the demo's settings: the handout's network again.
    assert resolve(["--preset", "lab"], synthetic=True) == real
    recommended = resolve(["--preset", "recommended"], synthetic=False)
    assert recommended["centre"] and recommended["batch_norm"]  # the improvements, by name
