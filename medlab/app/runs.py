"""Run folders, saved configuration, seeds and the one-line error contract.

Every script reports bad input by raising `UserError`; `main_guard` turns it into one line on
stderr and exit code 2, so users never see a traceback for a mistake they can fix.
"""

import contextlib
import datetime
import functools
import importlib.util
import io
import os
import platform
import random
import signal
import sys
import threading
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from medlab.atomic import write_json
from medlab.errors import UserError, disk_full, first_line
from medlab.images import check_outside_data, forget_data_folders

PACKAGES = (
    "tensorflow",
    "keras",
    "jax",  # recorded when installed (KERAS_BACKEND=jax)
    "numpy",
    "matplotlib",
    "scikit-image",
    "opencv-python-headless",
    "opencv-python",
    "scipy",
)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a scheduler, `docker stop`): stopped like Ctrl-C, exit code 143."""


def main_guard(main, lower="--batch-size or the image size"):
    """Decorate a script's `main` so that a `UserError` ends the program with exit code 2.

    Running out of memory or disk space is reported the same way, naming the settings to `lower`.
    Ctrl-C and SIGTERM stop it with one line that says how to resume (exit codes 130 and 143).
    """

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        previous = on_sigterm(Terminated)
        try:
            with console():
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
        except KeyboardInterrupt as stop:
            signal_name = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
            how = (
                f"; the epochs committed so far are kept: continue with {_resume}"
                if _resume
                else ""
            )
            print(f"interrupted ({signal_name}){how}", file=sys.stderr)
            sys.exit(143 if isinstance(stop, Terminated) else 130)
        finally:
            on_sigterm(previous)
            resume_with(None)  # a later command of this process has its own

    return guarded


def on_sigterm(handler):
    """Raise `handler` (an exception class) on SIGTERM, or restore a previous handler; returns the
    handler it replaces. Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if isinstance(handler, type) and issubclass(handler, BaseException):
        exception = handler

        def handler(signum, frame):
            raise exception()

    return signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def console():
    """stdout and stderr that never raise for what is printed: a character the terminal's encoding
    lacks is escaped, and once a reader such as `head -1` has closed the pipe, output is dropped
    while the run goes on to finish its folder."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="backslashreplace")
    original = sys.stdout
    sys.stdout = PipeSafe(original)
    try:
        yield
    finally:
        sys.stdout = original


class PipeSafe:
    """A text stream that goes silent (to os.devnull) when its reader has gone away."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self):
        # Also the descriptor, so the interpreter's own flush at exit finds a reader.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        self._stream = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def run_commands(argv, commands, lower, backends=("tensorflow", "jax")):
    """The one entry shape of every script: `argv[0]` names a subcommand of `commands` (e.g.
    "predict", "explain", "evaluate"), anything else goes to the first command (training), under
    `main_guard`. Each command takes the rest of the command line. `backends`: the Keras backends
    the script runs on; another `KERAS_BACKEND` is refused before anything starts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next(iter(commands))
    name = argv[0] if argv and argv[0] in commands and argv[0] != first else first
    rest = argv[1:] if name != first else argv

    def command(rest):
        check_backend(backends)
        forget_data_folders()
        return commands[name](rest)

    return main_guard(functools.wraps(commands[name])(command), lower=lower)(rest)


def check_backend(backends):
    """A one-line `UserError` for a `KERAS_BACKEND` the script cannot run on (misspelt, another
    backend, or not installed), instead of Keras' traceback at its first import."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:
        return
    script = os.path.basename(sys.argv[0]) or "this script"
    if backend not in backends:
        raise UserError(
            f"KERAS_BACKEND={backend!r} is not a backend {script} runs on; set it to "
            f"{' or '.join(backends)}, or unset it (TensorFlow is the default)"
        )
    if importlib.util.find_spec(backend) is None:
        raise UserError(
            f"KERAS_BACKEND={backend} but {backend} is not installed; install it (pip install "
            f"-r requirements-dev.txt) or unset KERAS_BACKEND"
        )


def set_seed(seed):
    """Seed Python, NumPy and TensorFlow/Keras for a reproducible run."""
    import keras  # here, not on top: the application layer loads without TensorFlow

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def new_run_dir(root, name):
    """Create `root/<timestamp>-<name>/`, a folder no earlier run has used."""
    root = Path(root)
    check_outside_data(root, "--out")
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
            fix = "free space or pass --out on a disk with room"
            if not disk_full(error):
                fix = "pass --out with a writable folder"
            raise UserError(
                f"cannot create the output folder {path}: {error.strerror}; {fix}"
            ) from None
    raise UserError(f"too many runs named {name} in {root} this second; try again")


def check_saved_parameters(saved, defaults, path):
    """Refuse saved parameters (a resumed run's plan or config) that a hand edit broke: each must
    have the type of its default (an int may stand for a float; a None default takes anything)."""
    for name, default in defaults.items():
        value = saved.get(name)
        if default is None or name not in saved:
            continue
        kinds = (int, float) if type(default) is float else (type(default),)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kinds):
            raise UserError(
                f"{path} is damaged: {name!r} is {value!r}, not a {type(default).__name__} like "
                f"{default!r}; restore the file, or start a new run"
            )


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
    try:
        with open(path, "rb"):
            pass
    except OSError as error:  # zipfile would call an unreadable file damaged
        raise UserError(
            f"cannot read model {path}: {error.strerror or error}; make it readable (chmod +r)"
        ) from None
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
_resume = None  # the command that continues the training of this process, once it has a folder


def resume_with(command, folder=None):
    """Remember `command` as the way to continue this process's training (None: nothing to
    resume), for an interruption's message and for `INCOMPLETE.txt` (rewritten in `folder`)."""
    global _resume
    _resume = command
    if folder is not None:
        mark_incomplete(folder)


def mark_incomplete(folder):
    """Flag `folder` as unfinished until `mark_complete`: a run killed, out of memory or out of disk
    space then never looks finished. The file says how to continue a training that can be."""
    how = f" Continue it with: {_resume}" if _resume else ""
    (Path(folder) / INCOMPLETE).write_text(
        "This run has not finished (it is running, or it was interrupted or failed): its results "
        f"are missing or partial.{how}\n",
        encoding="utf-8",
    )
    return Path(folder)


def mark_complete(folder):
    (Path(folder) / INCOMPLETE).unlink(missing_ok=True)


def resource_message(error, lower):
    """The one-line message for running out of memory or disk space, or None for any other error.
    A full disk is recognised first: libraries report it in many words, some of them "memory"."""
    text = first_line(error)
    if disk_full(error):
        return (
            f"the disk is full ({text}); free space or pass --out on a disk with room. The run "
            f"folder keeps {INCOMPLETE}, so it is not mistaken for a finished run"
        )
    out_of_memory = (
        isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError"
    )
    if out_of_memory or "out of memory" in text.lower() or "OOM when allocating" in text:
        return (
            f"out of memory ({text}); lower {lower}. The run folder keeps {INCOMPLETE}, "
            "so it is not mistaken for a finished run"
        )
    return None
