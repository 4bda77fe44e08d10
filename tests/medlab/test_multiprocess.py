"""Data-parallel U-Net training over two local processes on JAX (KERAS_BACKEND=jax, JAX's gloo
collectives over 127.0.0.1), started as a user starts them on two machines: the same command with
KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT

import unet
from medlab.checkpoints import read_state
from medlab.plots import read_history
from medlab.synthetic.xray import write_chest_xrays

# One xdist worker runs both tests in turn, with one JAX compilation cache between them.
pytestmark = pytest.mark.xdist_group("jax-processes")

# 8 training pairs, 2 validation: with a global batch of 4, two steps an epoch.
TINY = "--size 32 --depth 2 --base 2 --experiments 4a --lr 0.01".split()
# Seconds within which a process whose peer died must end (it fails at its next collective step).
LOST_PEER_TIMEOUT = 120


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One JAX compilation cache for every process of this module: they all train the same tiny
    U-Net, and compiling takes most of a tiny run's time (84 s cold, 29 s from the cache, for one
    process; the processes of a pair gain less)."""
    folder = tmp_path_factory.mktemp("jax-cache")
    cache = {
        "JAX_COMPILATION_CACHE_DIR": str(folder),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cache.items():
            patch.setenv(name, value)
        yield folder


def start(*args, env=None):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main_segmentation.py"), *map(str, args)],
        cwd=ROOT,
        env=dict(
            os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT), MPLBACKEND="Agg", **(env or {})
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_pair(*args, crash_process_1=None):
    """Processes 0 and 1 of a two-process run; process 1 SIGKILLs itself at `crash_process_1`."""
    port = free_port()
    processes = []
    for index in (0, 1):
        env = {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
        }
        if index == 1 and crash_process_1:
            env["MEDLAB_CRASH_AT"] = crash_process_1
        # A resumed run takes its strategy from the plan it saved, like every other setting.
        strategy = [] if "--resume" in args else ["--strategy", "multiworker"]
        processes.append(start(*strategy, *args, env=env))
    return processes


@contextlib.contextmanager
def stopped_at_the_end(processes):
    """`processes`, each killed when the test ends before it does (a failed test leaves none)."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def finish(process, timeout=1500):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def final_weights(run):
    return unet.load_unet(run / "model.keras", compile=False).get_weights()


def test_two_processes_train_like_one_process_with_the_same_global_batch(tmp_path):
    write_chest_xrays(tmp_path / "X_ray", 10, 32, seed=3)
    data = ["--data-dir", tmp_path / "X_ray", *TINY, "--epochs", "2"]
    pair = start_pair(*data, "--batch-size", "2", "--out", tmp_path / "two")
    single = start(*data, "--batch-size", "4", "--strategy", "default", "--out", tmp_path / "one")
    with stopped_at_the_end([*pair, single]) as processes:
        (code0, out0, err0), (code1, out1, err1), (code, out, err) = map(finish, processes)
    assert code0 == 0 and code1 == 0 and code == 0, (err0 + err1 + err)[-3000:]
    assert "DataParallel over 2 device(s) of 2 process(es), this is process 0" in out0
    assert "global batch 4 = 2 per replica x 2" in out1
    assert "process 1 of 2: training done; process 0 writes" in out1
    # One run folder for the pair: process 1 wrote nothing there.
    assert sorted(p.name.split("-", 2)[2] for p in (tmp_path / "two").iterdir()) == [
        "4a",
        "summary",
    ]
    (two,), (one,) = (tmp_path / "two").glob("*-4a"), (tmp_path / "one").glob("*-4a")
    assert (two / "summary.md").exists() is False and list(
        (tmp_path / "two").glob("*-summary/summary.md")
    )
    losses = read_history(one / "history.csv")["loss"]
    assert losses[-1] < losses[0]  # it trained, so equal weights mean something
    np.testing.assert_allclose(read_history(two / "history.csv")["loss"], losses, rtol=1e-5)
    difference = max(
        float(np.max(np.abs(a - b))) for a, b in zip(final_weights(two), final_weights(one))
    )
    print(f"largest weight difference, two processes vs one: {difference:.2e}")
    assert difference < 1e-5
    assert json.loads((two / "config.json").read_text())["parameters"]["processes"] == 2


def test_a_killed_process_ends_its_peer_with_one_error_line_and_the_pair_resumes(tmp_path):
    write_chest_xrays(tmp_path / "X_ray", 10, 32, seed=3)
    out = tmp_path / "out"
    args = ["--data-dir", tmp_path / "X_ray", *TINY, "--epochs", "2", "--batch-size", "2"]
    # Process 1 is killed during epoch 2, after process 0 committed epoch 1.
    with stopped_at_the_end(start_pair(*args, "--out", out, crash_process_1="batch:3")) as pair:
        survivor, killed = pair
        killed.communicate(timeout=1500)
        assert killed.returncode == -9
        died = time.monotonic()
        code, stdout, stderr = finish(survivor, timeout=LOST_PEER_TIMEOUT)  # no hang
        print(f"process 0 ended {time.monotonic() - died:.0f} s after process 1 was killed")
    errors = [line for line in (stdout + stderr).splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (stdout + stderr)[-3000:]
    assert "Traceback" not in stderr and "--resume" in errors[0]
    (summary,), (run,) = out.glob("*-summary"), out.glob("*-4a")
    state = read_state(run / "backup")  # raises on a damaged checkpoint
    assert state["epoch"] == 1 and not (run / "metrics.json").exists()
    assert state["best"]["epoch"] == 1  # committed, and checked by read_state
    assert not (run / "best.keras").exists()  # written when training ends

    with stopped_at_the_end(start_pair("--resume", summary)) as pair:
        resumed = [finish(process) for process in pair]
    assert all(code == 0 for code, _, _ in resumed), "".join(err for _, _, err in resumed)[-3000:]
    assert all("resuming" in stdout for _, stdout, _ in resumed)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    unet.load_unet(run / "best.keras")
