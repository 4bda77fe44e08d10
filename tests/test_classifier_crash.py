"""Crash safety of the classifiers: cam_vgg16.py and transfer_vgg16.py killed with SIGKILL during
an epoch, then `--resume`d, end as complete runs with exactly the epochs asked for in their
history; a second `--resume` of a run in use is refused."""

import csv
import fcntl
import os
import signal

import pytest

import cam_vgg16
import transfer_vgg16 as tv
from medlab.synthetic.skin_bone import synthetic_class_set
from tests.conftest import run_script


@pytest.fixture(scope="module")
def bone(tmp_path_factory):
    return synthetic_class_set(
        "bone", n_train=8, n_val=4, size=64, root=tmp_path_factory.mktemp("data")
    )


def killed_at_batch(count, script, *args):
    os.environ["MEDLAB_CRASH_AT"] = f"batch:{count}"
    try:
        result = run_script(script, *args)
    finally:
        del os.environ["MEDLAB_CRASH_AT"]
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return result


def epochs_in(history):
    with open(history, newline="") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


def assert_finished(run):
    assert not (run / "INCOMPLETE.txt").exists() and not (run / "backup").exists()
    assert not list(run.rglob("*.partial*")) and (run / "summary.md").is_file()


def test_cam_killed_during_an_epoch_resumes_to_the_epochs_asked(bone, tmp_path, capsys):
    tiny = "--size 32 --base 2 --epochs 3 --batch-size 4 --grid-images 2 --sanity-images 2"
    out = tmp_path / "out"
    killed_at_batch(4, "cam_vgg16.py", "--data-dir", bone, *tiny.split(), "--out", out)
    (run,) = out.iterdir()  # 2 batches an epoch: killed in epoch 2, after epoch 1 was committed
    assert epochs_in(run / "history.csv") == [0]
    assert f"python cam_vgg16.py --resume {run}" in (run / "INCOMPLETE.txt").read_text()
    cam_vgg16.main(["--resume", str(run)])
    assert "after epoch 1 of 3" in capsys.readouterr().out
    assert epochs_in(run / "history.csv") == [0, 1, 2]
    assert_finished(run)


def test_transfer_killed_during_an_epoch_resumes_every_training(bone, tmp_path, capsys):
    tiny = "--weights none --epochs 2 --image-size 32 --scratch-size 32 --bootstrap 100"
    common = ["--data-dir", bone, *tiny.split(), "--batch-size", "4"]
    common += ["--cache-dir", tmp_path / "cache", "--out", tmp_path / "out"]
    # The head trains 2 epochs of 2 batches, then the from-scratch model: batch 7 is in its
    # second epoch.
    killed_at_batch(7, "transfer_vgg16.py", *common)
    (run,) = (tmp_path / "out").iterdir()
    assert epochs_in(run / "history_transfer.csv") == [0, 1]
    assert epochs_in(run / "history_scratch.csv") == [0]
    with pytest.raises(SystemExit) as stop:
        tv.main(["--resume", str(run), "--lr", "0.1"])
    assert stop.value.code == 2 and "--lr cannot be applied" in capsys.readouterr().err
    held = os.open(run, os.O_RDONLY)  # as another process resuming it would
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(SystemExit) as stop:
        tv.main(["--resume", str(run)])
    os.close(held)
    assert stop.value.code == 2 and "is in use by another process" in capsys.readouterr().err
    tv.main(["--resume", str(run)])
    out = capsys.readouterr().out
    assert "after epoch 2 of 2" in out and "after epoch 1 of 2" in out
    for model in ("transfer", "scratch"):
        assert epochs_in(run / f"history_{model}.csv") == [0, 1]
    assert_finished(run)
