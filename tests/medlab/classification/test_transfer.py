"""transfer_vgg16: the feature cache, label alignment, the frozen backbone, the exported model and
the weights options, tested in-process on tiny inputs."""

import cv2
import numpy as np
import pytest

import transfer_vgg16 as tv
from medlab.app.classification import transfer_run
from medlab.classification import transfer
from medlab.classification.data import load_class_split
from medlab.distribute import single_device
from medlab.errors import UserError
from medlab.images import load_image

SIZE = 32  # the smallest input VGG16 accepts: tests stay fast


class MeanColour:
    """A stand-in backbone: the mean of each input channel, counting its passes."""

    def __init__(self):
        self.passes = 0

    def predict_on_batch(self, batch):
        self.passes += 1
        return np.asarray(batch).mean(axis=(1, 2))


def write_image(path, colour, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:] = colour[::-1]  # OpenCV writes BGR
    pixels[size // 4 : size // 2, : size // 3] = 255  # some structure, so images differ
    assert cv2.imwrite(str(path), pixels)
    return path


def lab_folder(root, per_class=5):
    """Set/{train,validation}/{A,B}/: class A reddish, class B bluish, brightness varies by file."""
    for split in ("train", "validation"):
        for i in range(per_class):
            write_image(root / split / "A" / f"a{i}.png", (120 + 12 * i, 20, 10 * i))
            write_image(root / split / "B" / f"b{i}.png", (10 * i, 30, 120 + 12 * i))
    return root


def test_cache_miss_then_hit_then_miss_when_one_image_changes(tmp_path, capsys):
    paths = [
        write_image(tmp_path / "img" / f"{i}.png", (10 * i, 50, 200 - 10 * i)) for i in range(5)
    ]
    backbone = MeanColour()
    extract = lambda paths, **kw: transfer.cached_features(
        backbone, paths, SIZE, kw.get("pre", "vgg16"), tmp_path / "cache", kw.get("id", "w1")
    )
    first, hit = extract(paths)
    assert not hit and backbone.passes == 1
    again, hit = extract(paths)
    assert hit and backbone.passes == 1  # no backbone pass at all
    assert "skipped extraction" in capsys.readouterr().out
    np.testing.assert_array_equal(first, again)

    reordered, hit = extract(paths[::-1])  # same files in another order: same cache, rows follow
    assert hit
    np.testing.assert_array_equal(reordered, first[::-1])

    for key, value in (("pre", "rescale"), ("id", "other-weights")):
        _, hit = extract(paths, **{key: value})
        assert not hit
    passes = backbone.passes
    write_image(paths[2], (0, 255, 0))  # same name, new contents
    changed, hit = extract(paths)
    assert not hit and backbone.passes > passes
    assert not np.allclose(changed[2], first[2])
    np.testing.assert_allclose(changed[[0, 1, 3, 4]], first[[0, 1, 3, 4]])


def test_features_and_labels_follow_the_same_file_list(tmp_path):
    split = load_class_split(lab_folder(tmp_path / "Set", per_class=10))
    paths = list(split.train_paths) + list(split.val_paths)  # 40 images: batches of 16, 16, 8
    labels = np.concatenate([split.train_labels, split.val_labels])
    features, _ = transfer.cached_features(
        MeanColour(), paths, SIZE, "rescale", tmp_path / "cache", "w"
    )
    assert features.shape == (40, 3)  # the last partial batch is kept
    for row, path, label in zip(features, paths, labels):
        np.testing.assert_allclose(
            row, load_image(path, (SIZE, SIZE), 3).mean(axis=(0, 1)), atol=1e-6
        )
        assert label == ("B" == path.parent.name)
        assert (row[2] > row[0]) == bool(label)  # bluish images carry label 1


@pytest.fixture(scope="module")
def random_backbone():
    import keras

    keras.utils.set_random_seed(0)
    return transfer.load_backbone("none", SIZE)


def test_bfloat16_features_are_close_to_float32s_and_cached_apart(tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(transfer, "check_native_bfloat16", lambda *refusal: None)  # as on a GPU
    paths = [
        write_image(tmp_path / "img" / f"{i}.png", (20 * i, 90, 200 - 20 * i)) for i in range(4)
    ]
    features, hits = {}, {}
    for precision in ("float32", "bfloat16", "float32", "bfloat16"):
        keras.utils.set_random_seed(0)  # the same random weights: the same fingerprint
        backbone = transfer.load_backbone("none", SIZE, precision)
        assert transfer.feature_precision(backbone) == precision
        features[precision], hit = transfer.cached_features(
            backbone, paths, SIZE, "vgg16", tmp_path / "cache", "w"
        )
        hits.setdefault(precision, []).append(hit)
    assert hits == {"float32": [False, True], "bfloat16": [False, True]}  # one cache each
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy is restored
    full, half = features["float32"], features["bfloat16"]
    assert half.dtype == np.float32 and not np.array_equal(half, full)  # really computed in 16 bits
    assert np.sqrt(np.mean((half - full) ** 2)) < 0.02 * np.sqrt(np.mean(full**2))


def test_the_precision_is_in_the_cache_key_and_float32_keys_are_unchanged(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", (40 * i, 90, 10)) for i in range(2)]
    key = lambda *precision: transfer.feature_cache_key(paths, SIZE, "vgg16", "w", *precision)
    assert key("float32") == key()  # caches written before the option stay valid
    assert key("bfloat16") != key("float32")


def test_bfloat16_features_are_refused_where_bfloat16_is_emulated(monkeypatch):
    from medlab import distribute

    monkeypatch.setattr(distribute, "gpu_count", lambda: 0)
    monkeypatch.setattr(distribute, "cpu_supports_bfloat16", lambda: False)
    with pytest.raises(UserError, match="--feature-precision bfloat16 needs a GPU.*use float32"):
        transfer.load_backbone("none", SIZE, "bfloat16")


def test_head_training_leaves_the_backbone_unchanged_and_export_matches(tmp_path, random_backbone):
    import keras

    split = load_class_split(lab_folder(tmp_path / "Set", per_class=4))
    paths = list(split.train_paths) + list(split.val_paths)
    labels = np.concatenate([split.train_labels, split.val_labels])
    before = [w.copy() for w in random_backbone.get_weights()]
    features, _ = transfer.cached_features(
        random_backbone, paths, SIZE, "vgg16", tmp_path / "cache", "w"
    )
    params = {**tv.PARAMETERS, "epochs": 3, "lr": 1e-3, "batch_size": 4}
    train, val = np.arange(8), np.arange(8, 16)
    head, scores, _ = tv.train_transfer(
        features, labels, train, val, params, 0, tmp_path / "history.csv", single_device()
    )
    assert not random_backbone.trainable
    for old, new in zip(before, random_backbone.get_weights()):
        np.testing.assert_array_equal(old, new)

    full = transfer.export_full_model(random_backbone, head, "vgg16", SIZE)
    assert not any(isinstance(layer, keras.Model) for layer in full.layers)  # flat, Grad-CAM-able
    assert full.get_layer("block5_conv3").output.shape[-1] == 512
    full.save(tmp_path / "full.keras")
    reloaded = keras.models.load_model(tmp_path / "full.keras")
    for old, layer in zip(
        before,
        [
            w
            for block in reloaded.layers
            if block.name.startswith("block")
            for w in block.get_weights()
        ],
    ):
        np.testing.assert_array_equal(old, layer)
    raw = np.stack([load_image(p, (SIZE, SIZE), 3) for p in np.array(paths)[val]]) * 255.0
    np.testing.assert_allclose(reloaded.predict(raw, verbose=0)[:, 0], scores, atol=1e-4)


@pytest.mark.parametrize("preprocess", ["vgg16", "rescale"])
def test_export_preprocessing_equals_the_feature_preprocessing(preprocess):
    images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    layer = transfer.preprocessing_layer(preprocess)
    np.testing.assert_allclose(
        np.asarray(layer(images * 255.0)), transfer.to_backbone_input(images, preprocess), atol=1e-3
    )


@pytest.mark.parametrize("name", ["vgg16_notop.weights.h5", "vgg16_notop_legacy.h5"])
def test_a_local_weights_file_is_loaded(tmp_path, name):
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(123)
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / name
    if "legacy" in name:  # the format of Keras' own ImageNet file
        with h5py.File(path, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    else:
        source.save_weights(path)
    keras.utils.set_random_seed(0)  # a different random start, which the file must overwrite
    loaded = transfer.load_backbone(str(path), SIZE)
    assert len(loaded.get_weights()) == 26
    for expected, actual in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    assert not loaded.trainable


def test_weights_of_another_model_or_a_missing_file_are_user_errors(tmp_path):
    from medlab.classification.vgg import build_vgg16_style

    other = tmp_path / "other.weights.h5"
    build_vgg16_style((SIZE, SIZE, 3)).save_weights(other)
    with pytest.raises(UserError, match="does not fit VGG16"):
        transfer.load_backbone(str(other), SIZE)
    with pytest.raises(UserError, match="does not exist"):
        transfer.load_backbone(str(tmp_path / "missing.h5"), SIZE)


def test_scratch_model_is_flat_and_centres_its_pixels():
    import keras

    params = {**tv.PARAMETERS, "scratch_size": 32, "scratch_channels": 1}
    model = tv.build_scratch({**params, "scratch_centre": True})
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("Last_ConvLayer") is not None and model.output_shape == (None, 1)
    pixels = np.array([[[[0.0]], [[0.5]]], [[[0.75]], [[1.0]]]], np.float32).reshape(1, 2, 2, 1)
    centred = np.asarray(model.get_layer("centre_pixels")(pixels)).ravel()
    np.testing.assert_allclose(centred, [-2.0, 0.0, 1.0, 2.0])
    lab = tv.build_scratch(params)  # the default is the handout's: [0, 1] pixels as they are
    assert "centre_pixels" not in [layer.name for layer in lab.layers]


def test_predict_names_a_damaged_class_file_in_one_line(tmp_path):
    model = tmp_path / "scratch_vgg16.keras"
    model.write_bytes(b"unused: the class file is read first")
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(UserError, match="scratch_vgg16.json is damaged"):
        transfer_run.load_saved_model(model)
