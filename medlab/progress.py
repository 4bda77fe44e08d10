"""A progress bar for long loops over images (decoding, checking, generating)."""

import sys

import keras


def progress(total, label):
    """A Keras progress bar with a title line; in a log file (no terminal) only the final line."""
    print(label)
    return keras.utils.Progbar(total, unit_name="image", verbose=1 if sys.stdout.isatty() else 2)
