"""medlab.classification.train: tf.data keeps image/label pairs, augments only when asked."""

import numpy as np

from medlab.classification.train import class_one_scores, image_dataset, targets_for


def numbered_images(count=10, size=16):
    """Image i is filled with the value i/100 plus a bright corner, so it can be recognised."""
    images = (
        np.zeros((count, size, size, 1), np.float32) + np.arange(count)[:, None, None, None] / 100
    )
    images[:, :4, :4] = 1.0
    return images


def test_shuffled_training_batches_keep_each_label_with_its_image():
    images = numbered_images()
    labels = np.arange(10, dtype=np.float32)[:, None]
    seen = []
    for batch_images, batch_labels in image_dataset(images, labels, 4, shuffle=True, seed=3):
        assert batch_images.shape[0] in (4, 2)  # the last partial batch is kept
        for image, label in zip(batch_images.numpy(), batch_labels.numpy()):
            assert round(float(image[8, 8, 0]) * 100) == int(label[0])
            seen.append(int(label[0]))
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_augmentation_only_when_asked():
    images = numbered_images()
    labels = np.zeros((10, 1), np.float32)
    plain = np.concatenate([b.numpy() for b, _ in image_dataset(images, labels, 4)])
    np.testing.assert_array_equal(plain, images)  # validation data: untouched, in order
    augmented = np.concatenate(
        [b.numpy() for b, _ in image_dataset(images, labels, 4, augment=True, seed=1)]
    )
    assert augmented.shape == images.shape
    assert np.mean(np.abs(augmented - images) > 1e-3) > 0.01  # geometry changed
    no_geometry = {"rotation": 0.0, "shift": 0.0, "zoom": 0.0, "flip": False}
    recoloured = np.concatenate(
        [
            b.numpy()
            for b, _ in image_dataset(images, labels, 4, augment={**no_geometry, "colour": 0.5})
        ]
    )
    corner, centre = recoloured[:, 0, 0, 0], recoloured[:, 8, 8, 0]
    assert np.ptp(corner) > 0.05 and np.all(corner > centre)  # new light, same picture


def test_targets_and_scores_for_sigmoid_and_softmax_models():
    import keras

    inputs = keras.Input((3,))
    sigmoid = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    softmax = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    labels = np.array([0, 1, 1])
    assert targets_for(sigmoid, labels).shape == (3, 1)
    np.testing.assert_array_equal(targets_for(softmax, labels), [[1, 0], [0, 1], [0, 1]])
    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    np.testing.assert_allclose(class_one_scores(softmax, x), softmax.predict(x, verbose=0)[:, 1])
    np.testing.assert_allclose(class_one_scores(sigmoid, x), sigmoid.predict(x, verbose=0)[:, 0])
