"""Kind 4 of the failures: resources. Every write an epoch's commit makes (each writer the
checkpoint module uses, found from its imports) fails with ENOSPC in turn: the run ends in one
`error:` line and the epochs committed before stay restorable. A disk without room for the next
checkpoint is refused before HDF5 writes (whose failures can crash the process), and a transfer
run whose feature extraction cannot fit in memory is refused before anything is built."""

import contextlib
import errno
import io

import numpy as np
import pytest
from test_failure_kinds_artefacts import tiny_model
from test_failure_kinds_outputs import two_class_folder

import transfer_vgg16
from medlab import checkpoints
from medlab.app.runs import main_guard
from medlab.checkpoints import EpochCheckpoint, fit_resumable

WRITER_MODULES = ("medlab.atomic", "medlab.plots")


def writers():
    """The names of the writing functions `medlab.checkpoints` calls, from its own imports."""
    return sorted(
        name
        for name, value in vars(checkpoints).items()
        if callable(value) and getattr(value, "__module__", None) in WRITER_MODULES
    )


def data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.random((16, 4), np.float32), rng.integers(0, 2, (16, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_the_writers_are_found():
    assert {"write_json", "replacing"} <= set(writers())


@pytest.mark.parametrize("writer", writers())
def test_a_full_disk_at_each_write_of_a_commit_is_one_line(writer, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fit_resumable(tiny_model(), data(), data(), 1, EpochCheckpoint(run, "val_accuracy"), verbose=0)
    monkeypatch.setattr(checkpoints, writer, no_space)
    train = main_guard(
        lambda: fit_resumable(
            tiny_model(), data(), data(), 3, EpochCheckpoint(run, "val_accuracy"), verbose=0
        )
    )
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        train()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: the disk is full"), err
    assert "\n" not in err
    monkeypatch.undo()
    assert EpochCheckpoint(run, "val_accuracy").restore(tiny_model()) >= 1
    assert not list(run.rglob("*.partial.*"))


def test_no_checkpoint_is_written_without_room_for_it(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: type("U", (), {"free": 1}))
    train = main_guard(
        lambda: fit_resumable(
            tiny_model(), data(), data(), 2, EpochCheckpoint(run, "val_accuracy"), verbose=0
        )
    )
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        train()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: the disk is full") and "MB free" in err
    assert not list((run / "backup").iterdir())


def test_a_feature_extraction_too_large_for_memory_is_refused_up_front(tmp_path, capsys):
    folder = two_class_folder(tmp_path / "skin")
    argv = ["--data-dir", str(folder), "--weights", "none", "--image-size", "4096"]
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        transfer_vgg16.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "--image-size 4096" in err and "GB" in err, err
    assert not (tmp_path / "out").exists()


def test_a_peer_that_never_starts_is_one_line_within_the_join_timeout(tmp_path, monkeypatch):
    import socket

    from tests.conftest import run_script

    with socket.socket() as probe:  # a port nobody listens on: process 0 never starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    variables = {
        "KERAS_BACKEND": "jax",
        "MEDLAB_JOIN_TIMEOUT_S": "3",
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": "1",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)  # run_script passes os.environ to the process
    result = run_script(
        "main_segmentation.py",
        *"--strategy multiworker --epochs 1 --experiments 4a".split(),
        *["--out", tmp_path / "out"],
        timeout=120,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "not every process joined" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
