"""Atomic writes: a file that a later step reads is either its old complete version or the new one.

A writer writes to a temporary name in the same folder (the same file system, so renaming is one
step), flushes it to the disk and renames it over the target with `os.replace`. A process killed
while writing leaves at most a `*.partial.*` file behind, which no reader ever opens.
"""

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np


def partial_name(path):
    """`best.keras` -> `best.partial.keras`: suffixes kept (Keras checks `.keras`/`.weights.h5`)."""
    path = Path(path)
    head, dot, tail = path.name.partition(".")
    return path.with_name(f"{head}{PARTIAL}{dot}{tail}")


PARTIAL = ".partial"


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path next to `path`; once the block has written it, it replaces `path`."""
    path = Path(path)
    temp = partial_name(path)
    try:
        yield temp
        flush_to_disk(temp)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def flush_to_disk(path):
    # Without fsync a power cut could leave the renamed file empty; a kill -9 alone could not.
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_text_atomic(path, text):
    with replacing(path) as temp:
        Path(temp).write_text(text, encoding="utf-8")


def copy_atomic(source, target):
    with replacing(target) as temp:
        shutil.copyfile(source, temp)


def copy_folder_being_written(source, target):
    """Copy a folder that another process may be writing meanwhile: its temporary files
    (`*.partial.*`) are left out, and a file renamed or removed between the listing and its copy
    is skipped, since the writer's complete version of it, if any, is copied under its own name."""

    def copy_if_still_there(src, dst):
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(src, dst)

    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns(f"*{PARTIAL}*"),
        copy_function=copy_if_still_there,
    )


def save_model_atomic(model, path):
    """`model.save(path)` (a .keras file) that a kill never leaves half written."""
    with replacing(path) as temp:
        model.save(temp)


def jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path, data):
    """Write `data` as indented JSON; NaN becomes null so every JSON reader accepts it."""

    def clean(value):
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    write_text_atomic(path, json.dumps(clean(jsonable(data)), indent=2) + "\n")


def fingerprint(path):
    """{size, sha256} of a file, recorded when it is written and checked when it is read back."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def matches(path, recorded):
    """Whether `path` is the file `recorded` (a `fingerprint`) describes: not truncated, not
    altered. Without a fingerprint (a record written before they were kept) it need only exist."""
    if not recorded:
        return Path(path).is_file()
    try:
        return fingerprint(path) == recorded
    except OSError:
        return False
