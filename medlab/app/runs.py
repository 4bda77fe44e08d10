"""Run folders, saved configuration, seeds and the one-line error contract.

Every script reports bad input by raising `UserError`; `main_guard` turns it into one line on
stderr and exit code 2, so users never see a traceback for a mistake they can fix.
"""

import datetime
import errno
import functools
import os
import platform
import random
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from medlab.atomic import write_json
from medlab.errors import UserError, first_line

PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "matplotlib",
    "scikit-image",
    "opencv-python-headless",
    "opencv-python",
    "scipy",
)


def main_guard(main, lower="--batch-size or the image size"):
    """Decorate a script's `main` so that a `UserError` ends the program with exit code 2.

    Running out of memory or disk space is reported the same way, naming the settings to `lower`.
    """

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            message = resource_message(error, lower)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return guarded


def run_commands(argv, commands, lower):
    """The one entry shape of every script: `argv[0]` names a subcommand of `commands` (e.g.
    "predict", "explain", "evaluate"), anything else goes to the first command (training), under
    `main_guard`. Each command takes the rest of the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next(iter(commands))
    name = argv[0] if argv and argv[0] in commands and argv[0] != first else first
    rest = argv[1:] if name != first else argv
    return main_guard(commands[name], lower=lower)(rest)


def set_seed(seed):
    """Seed Python, NumPy and TensorFlow/Keras for a reproducible run."""
    import keras  # here, not on top: the application layer loads without TensorFlow

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def new_run_dir(root, name):
    """Create `root/<timestamp>-<name>/`, a folder no earlier run has used."""
    root = Path(root)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt}"
        path = root / f"{stamp}-{name}{suffix}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return mark_incomplete(path)
        except FileExistsError:
            continue
        except OSError as error:
            raise UserError(
                f"cannot create the output folder {path}: {error.strerror}; "
                "pass --out with a writable folder"
            ) from None
    raise UserError(f"too many runs named {name} in {root} this second; try again")


def package_versions():
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def save_config(run_dir, config):
    """Save every parameter of a run with the command line and package versions."""
    write_json(
        Path(run_dir) / "config.json",
        {
            "parameters": config,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "versions": package_versions(),
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
        },
    )


def check_model_file(path, made_by):
    """A one-line `UserError` for a model file that is missing or not a .keras archive, found
    without starting TensorFlow."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; pass a .keras file saved by {made_by}")
    if not zipfile.is_zipfile(path):  # Keras would call a damaged file "File not found"
        raise UserError(
            f"cannot load model {path}: the file is damaged or not a .keras file (not a zip "
            f"archive); pass a .keras file saved by {made_by}"
        )
    return path


def load_keras_model(path, made_by, compile=True):
    """A saved `.keras` model or a one-line `UserError` naming the file and what to pass instead."""
    import keras  # here, not on top: the application layer loads without TensorFlow

    from medlab.classification import vgg  # noqa: F401  registers its layers, which models may hold

    path = check_model_file(path, made_by)
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for a file that is not a model
        raise UserError(
            f"cannot load model {path} ({first_line(error)}); pass a .keras file saved by {made_by}"
        ) from None


INCOMPLETE = "INCOMPLETE.txt"


def mark_incomplete(folder):
    """Flag `folder` as unfinished until `mark_complete`: a run killed, out of memory or out of disk
    space then never looks finished."""
    (Path(folder) / INCOMPLETE).write_text(
        "This run has not finished (it is running, or it was interrupted or failed): its results "
        "are missing or partial. A segmentation run continues with main_segmentation.py "
        "--resume.\n"
    )
    return Path(folder)


def mark_complete(folder):
    (Path(folder) / INCOMPLETE).unlink(missing_ok=True)


def resource_message(error, lower):
    """The one-line message for running out of memory or disk space, or None for any other error."""
    text = first_line(error)
    out_of_memory = (
        isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError"
    )
    if out_of_memory or "out of memory" in text.lower() or "OOM when allocating" in text:
        return (
            f"out of memory ({text}); lower {lower}. The run folder keeps {INCOMPLETE}, "
            "so it is not mistaken for a finished run"
        )
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text:
        return (
            f"the disk is full ({text}); free space or pass --out on a disk with room. The run "
            f"folder keeps {INCOMPLETE}, so it is not mistaken for a finished run"
        )
    return None
