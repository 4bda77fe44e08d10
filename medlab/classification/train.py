"""Training helpers for the two-class image tasks (transfer learning, from-scratch VGG, Grad-CAM).

Labels are integers 0/1 in the alphabetical order of the class folders. A model ends either in one
sigmoid unit (probability of class 1) or in a softmax over two classes; the helpers below accept
both, so every script scores its models the same way.
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf

from medlab.augment import augmented_batches, random_affine, random_colour
from medlab.errors import UserError

# Retracing notices (each new model or last partial batch) are noise to the scripts' users.
tf.get_logger().setLevel("ERROR")


def is_softmax_pair(model):
    return model.output_shape[-1] == 2


def compile_classifier(model, lr, jit_compile=False):
    """Adam with binary cross-entropy (one sigmoid unit) or categorical cross-entropy (softmax);
    XLA only when asked (`--jit`; Keras' "auto" would turn it on for one GPU)."""
    loss = "categorical_crossentropy" if is_softmax_pair(model) else "binary_crossentropy"
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def targets_for(model, labels):
    """Labels in the form the model's loss expects: one-hot for a softmax pair, else (N, 1)."""
    labels = np.asarray(labels)
    if is_softmax_pair(model):
        return keras.utils.to_categorical(labels, 2).astype(np.float32)
    return labels.astype(np.float32)[:, None]


def image_dataset(images, targets, batch_size, shuffle=False, augment=False, seed=0):
    """A `tf.data` pipeline of (image, target) batches; the last partial batch is kept.

    Only training data should be shuffled and augmented. `augment=True` gives each image of a batch
    its own random rotation (10 degrees), shift (0.1), zoom (0.2) and horizontal flip, as the lab's
    generator did; a dict of `random_affine` options (e.g. `{"zoom": 0.0}`) changes them, and its
    "colour" entry adds `random_colour` of that strength after the geometry.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, targets))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    options = dict(augment) if isinstance(augment, dict) else {}
    colour = options.pop("colour", 0.0)
    transform = None
    if augment:
        transform = lambda inputs, targets, batch_seed: (
            random_colour(
                random_affine(inputs, batch_seed, **options),
                tf.random.experimental.stateless_fold_in(batch_seed, 1),
                colour,
            ),
            targets,
        )
    return augmented_batches(dataset, batch_size, transform, seed).prefetch(tf.data.AUTOTUNE)


def class_weights(labels, mode):
    """Keras `class_weight` for `mode`: None for "none"; for "balanced" each class weighs
    n / (2 * n_class), so both classes count as much in the loss and the majority class is no
    longer the cheapest answer (the usual collapse on imbalanced real sets)."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels), minlength=2)
    return {label: float(counts.sum() / (2 * n)) for label, n in enumerate(counts) if n}


def fit_logged(
    model, train_data, val_data, epochs, csv_path, batch_size=None, class_weight=None, callbacks=()
):
    """Fit for exactly `epochs` epochs, logging every epoch to `csv_path` and to the caller's
    `callbacks` (the scripts' TensorBoard logger); returns seconds taken.

    `train_data`/`val_data` are `tf.data` pipelines or (inputs, targets) array pairs. The final
    model is what the caller evaluates: picking the best validation epoch would make the
    validation score optimistic.
    """
    start = time.perf_counter()
    # Arrays are shuffled by Keras; a tf.data pipeline shuffles itself (see `image_dataset`).
    options = (
        {"batch_size": batch_size, "shuffle": True}
        if isinstance(train_data, tuple)
        else {"shuffle": False}
    )
    inputs = train_data if not isinstance(train_data, tuple) else train_data[0]
    targets = None if not isinstance(train_data, tuple) else train_data[1]
    model.fit(
        inputs,
        targets,
        validation_data=val_data,
        epochs=epochs,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path)), *callbacks],
        class_weight=class_weight,
        verbose=1 if sys.stdout.isatty() else 2,
        **options,
    )
    return time.perf_counter() - start


def class_one_scores(model, inputs, batch_size=32):
    """Probability of class 1 for each input, from a sigmoid unit or a softmax pair."""
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0)
    return probabilities[:, 1] if probabilities.shape[-1] == 2 else probabilities[:, 0]


def stratified_folds(labels, folds, seed):
    """`folds` (train indices, held-out indices) pairs; each class is spread evenly over folds."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} images per class, but a class has "
            f"only {counts.min()}; lower --folds or add images"
        )
    rng = np.random.default_rng(seed)
    fold_of = np.empty(labels.size, dtype=int)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of[members] = np.arange(members.size) % folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds)]
