"""Model sidecars: written and read back, and every malformed one refused in one line naming the
file and the key; unique output names with their mapping."""

import json

import pytest

from medlab.app.outputs import output_names, write_output_names
from medlab.app.runs import UserError, check_saved_parameters
from medlab.app.sidecars import read_sidecar, setting, write_sidecar

GOOD = {"channels": 3, "input_scale": 255.0, "class_names": ["Mel", "Nevi"], "input_size": 32}


def test_a_sidecar_is_read_back_with_its_defaults(tmp_path):
    model = tmp_path / "m.keras"
    assert read_sidecar(model, "x.py") is None  # a model saved elsewhere has none
    write_sidecar(model, **GOOD)
    settings = read_sidecar(model, "x.py")
    assert settings["input_scale"] == 255.0 and settings["positive_class"] == "Nevi"
    assert settings["postprocess"] is False and settings["file"] == str(tmp_path / "m.json")
    assert setting(settings, "input_scale", "--scale", None, 1.0) == 255.0
    with pytest.raises(UserError, match=r"--scale 1.0 conflicts with input_scale 255.0 .*m.json"):
        setting(settings, "input_scale", "--scale", 1.0, 1.0)
    assert setting(None, "input_scale", "--scale", None, 1.0) == 1.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{}", "lack the key 'channels'"),
        ("[]", "are not a JSON object"),
        ("{not json", "is damaged"),
        (json.dumps({**GOOD, "input_scale": "255"}), "'input_scale' has a wrong value '255'"),
        (json.dumps({**GOOD, "channels": True}), "'channels' has a wrong value True"),
        (json.dumps({**GOOD, "channels": 2}), "'channels' has a wrong value 2"),
        (json.dumps({**GOOD, "class_names": "Mel"}), "'class_names' has a wrong value"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "class_names"}), "'class_names'"),
    ],
)
def test_a_malformed_sidecar_is_one_line_naming_file_and_key(tmp_path, content, message):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read_sidecar(tmp_path / "m.keras", "x.py")
    assert str(tmp_path / "m.json") in str(error.value) and "\n" not in str(error.value)


def test_saved_parameters_of_a_wrong_type_are_refused():
    defaults = {"epochs": 3, "lr": 0.1, "flip": True, "name": "a", "layer": None}
    check_saved_parameters({"epochs": 5, "lr": 1, "flip": False, "layer": "x"}, defaults, "r.json")
    for broken in ({"epochs": "ten"}, {"lr": "fast"}, {"flip": 1}, {"epochs": True}):
        with pytest.raises(UserError, match=f"r.json is damaged: '{next(iter(broken))}'"):
            check_saved_parameters(broken, defaults, "r.json")


def test_outputs_of_images_with_one_stem_never_collide(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "y.png"]
    paths += [tmp_path / "a" / "X.jpg", tmp_path / "c" / ("é" * 200 + ".png")]
    names = write_output_names(tmp_path, paths, ("_mask.png", "_overlay.png"))
    assert names[:3] == ["a_x", "b_x", "y"] and names[3] == "a_X-2"
    assert len(f"{names[4]}_overlay.png".encode()) <= 255 and names[4].startswith("éé")
    rows = (tmp_path / "outputs.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "image,file_mask,file_overlay" and rows[2].endswith(
        "b_x_mask.png,b_x_overlay.png"
    )
    assert output_names([tmp_path / "x.png"] * 2, ("_cam.png",)) == ["x", "x-2"]
