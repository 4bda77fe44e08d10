"""Kind 2 of the failures: pixel, mask and model-settings meaning decided in one place. Generated
over every mask encoding the readers accept (each data type and file format OpenCV writes), every
image format training reads (the display reader of `explain` must read it too, the same way up),
and every classifier command that loads a model (found from the parsers: each argument named
`model`), which must treat a model without its settings the same way."""

import contextlib
import importlib
import io
import itertools

import cv2
import numpy as np
import pytest
from PIL import Image
from test_failure_kinds_blank import parsers_of

import unet
from medlab.checks import check_pairs
from medlab.images import IMAGE_EXTENSIONS, decode, decode_for_display

SIZE = 32
# What each data type can hold, and the file formats that store it.
FORMATS = {
    np.uint8: (".png", ".bmp", ".tif", ".jpg"),
    np.uint16: (".png", ".tif"),
    np.float32: (".tif",),
}


def mask_cases():
    """(dtype, extension, kind, pixels, expected lung) of every mask encoding: lung-free with
    faint noise (as JPEG compression leaves), 0/1 labels (integers), full-range lungs."""
    rng = np.random.default_rng(0)
    lungs = np.zeros((SIZE, SIZE), bool)
    lungs[8:24, 4:14] = lungs[8:24, 18:28] = True
    noise = np.kron(rng.integers(0, 12, (SIZE // 4, SIZE // 4)), np.ones((4, 4)))
    for dtype, extensions in FORMATS.items():
        top = 1.0 if dtype is np.float32 else np.iinfo(dtype).max
        faint = noise / 255 if dtype is np.float32 else noise
        kinds = {"faint noise": (faint, False), "full-range lungs": (lungs * top, True)}
        if dtype is not np.float32:
            kinds["0/1 labels"] = (lungs * 1, True)
            red = np.stack([0 * lungs, 0 * lungs, lungs * top], axis=-1)  # OpenCV's BGR order
            kinds["red lungs"] = (red, True)
        for extension, (kind, (pixels, lung)) in itertools.product(extensions, kinds.items()):
            yield dtype, extension, kind, pixels.astype(dtype), lung


@pytest.mark.parametrize(
    "dtype, extension, kind, pixels, lung",
    list(mask_cases()),
    ids=lambda v: getattr(v, "__name__", v) if not isinstance(v, np.ndarray) else "",
)
def test_every_mask_encoding_means_the_same_to_every_reader(
    tmp_path, dtype, extension, kind, pixels, lung
):
    if extension == ".jpg" and kind == "0/1 labels":
        pytest.skip("JPEG cannot keep 0/1 labels apart from its noise")
    mask = tmp_path / f"m{extension}"
    cv2.imwrite(str(mask), pixels)
    image = tmp_path / "i.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (SIZE, SIZE), np.uint8))
    loaded = unet.load_mask(mask, SIZE, warn=lambda line: None)
    share = float(loaded.mean())
    assert (share > 0.2) == lung and (share == 0.0) != lung, (kind, share)
    warnings = []
    all_empty = check_pairs([image], [mask], warn=warnings.append)
    assert all_empty != lung, warnings
    if kind == "faint noise" and dtype is not np.float32:
        assert any("faint values" in line for line in warnings), warnings


def image_cases():
    """(extension, dtype) of every format and depth training decodes."""
    for dtype, extensions in FORMATS.items():
        for extension in extensions:
            assert extension in IMAGE_EXTENSIONS
            yield extension, dtype


@pytest.mark.parametrize("extension, dtype", list(image_cases()))
def test_explain_reads_every_image_training_reads(tmp_path, extension, dtype):
    top = 1.0 if dtype is np.float32 else np.iinfo(dtype).max
    pixels = (np.random.default_rng(2).random((40, 48, 3)) * top).astype(dtype)
    path = tmp_path / f"x{extension}"
    assert cv2.imwrite(str(path), pixels)
    assert decode_for_display(path).shape[:2] == decode(path).shape[:2] == (40, 48)


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("longest", [100, 4200])
def test_the_picture_is_the_way_up_the_model_sees_it(tmp_path, orientation, longest):
    """A JPEG with an EXIF orientation: the full decoding (what the model is fed) and the display
    decoding (what the map is drawn over, reduced when large) agree on which way is up."""
    pixels = np.zeros((60, longest, 3), np.uint8)
    pixels[:, : longest // 4] = 255  # a white left end
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif)
    full, shown = decode(path), decode_for_display(path)
    assert full.shape[0] / full.shape[1] == pytest.approx(shown.shape[0] / shown.shape[1], 0.05)
    assert shown[:, : shown.shape[1] // 8].mean() > 200  # the white end where the model has it


def tiny_classifier(path):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(path)
    return path


def model_commands():
    """(script, command) of every classifier command with an argument named `model`."""
    for name in ("cam_vgg16", "transfer_vgg16"):
        module = importlib.import_module(name)
        for command in module.COMMANDS:
            yield name, command


@pytest.mark.parametrize("name, command", list(model_commands()))
def test_a_model_without_its_settings_is_refused_by_every_command(
    name, command, tmp_path, monkeypatch, capsys
):
    module = importlib.import_module(name)
    parsers = parsers_of(module, [command], monkeypatch)
    if not any(a.dest == "model" for p in parsers for a in p._actions):
        pytest.skip(f"{name} {command} loads no model")
    model = tiny_classifier(tmp_path / "bare.keras")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((SIZE, SIZE, 3), 128, np.uint8))
    out = ["--out", str(tmp_path / "out")] if command == "explain" else []
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        module.main([command, str(model), str(image), *out])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "bare.json are missing" in err, err
    assert not (tmp_path / "out").exists()
