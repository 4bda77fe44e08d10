"""Benchmark (not a test): one epoch of U-Net training on TensorFlow, on JAX in one process
(compiled, the default, and op by op with --no-jit), and on JAX in two processes (data-parallel,
one CPU core each), measured in one run.

Each configuration runs in its own fresh process(es) (a backend is chosen before Keras is imported)
on the same synthetic pairs, model, seed and global batch: a warm-up epoch (graph tracing, XLA
compilation), then timed epochs. Prints seconds per epoch and each configuration's time as a
ratio to TensorFlow's.

    python bench/backends.py [--pairs 64] [--size 128] [--base 8] [--batch-size 8] [--epochs 2]
    python bench/backends.py --pairs 16 --size 32 --base 2 --epochs 1   # a quick check that it runs
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up")
    parser.add_argument("--worker", metavar="STRATEGY", help=argparse.SUPPRESS)
    parser.add_argument("--worker-jit", choices=("default", "off"), help=argparse.SUPPRESS)
    return parser.parse_args()


def synthetic_pairs(count, size):
    """The same deterministic chest X-ray look-alikes in every process, made in memory."""
    import numpy as np

    from medlab.images import resize
    from medlab.synthetic.xray import chest_xray

    images, masks = [], []
    for i in range(count):
        image, mask = chest_xray(np.random.default_rng([1, i]), 256)
        images.append(resize(image.astype(np.float32), (size, size)).reshape(size, size, 1))
        masks.append((resize(mask.astype(np.float32), (size, size)) >= 0.5).reshape(size, size, 1))
    return np.stack(images), np.stack(masks).astype(np.float32)


def epoch_clock():
    """A Keras callback keeping each epoch's wall-clock seconds in `.seconds` (Keras is imported
    here: the backend of a worker is set before, by its environment)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


def worker(args):
    """One configuration's timing, printed as JSON by the process that writes (process 0)."""
    from medlab import quiet_tensorflow

    quiet_tensorflow()
    import unet
    from medlab.app.runs import set_seed
    from medlab.distribute import configure_scaling

    # As the scripts do: --jit not set (compiled on JAX, not on TensorFlow), or --no-jit.
    scaling = configure_scaling(args.worker, jit=None if args.worker_jit == "default" else False)
    images, masks = synthetic_pairs(args.pairs, args.size)
    data = unet.make_dataset(images, masks, args.batch_size, shuffle=True, seed=0)
    clock = epoch_clock()
    with scaling.scope():
        set_seed(0)
        model = unet.build_unet((args.size, args.size, 1), base=args.base, depth=4)
        unet.compile_unet(model, "bce", 1e-4, jit_compile=scaling.jit)
        # One fit, so nothing is compiled twice; its first epoch (tracing, compiling) is not timed.
        model.fit(data, epochs=1 + args.epochs, verbose=0, shuffle=False, callbacks=[clock])
    if scaling.writes:
        seconds = sum(clock.seconds[1:]) / args.epochs
        print(json.dumps({"epoch_seconds": seconds, "replicas": scaling.replicas}))


def run_configuration(args, backend, strategy, processes=1, jit="default"):
    """Start the worker process(es) of one configuration; returns process 0's seconds per epoch.
    Several processes are pinned to one core each."""
    command = [sys.executable, __file__, "--worker", strategy, "--worker-jit", jit]
    command += [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if not k.startswith("worker")
    ]
    port = free_port()
    started = []
    for index in range(processes):
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
        if processes > 1:
            env.update(
                KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes),
                KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            )
        pin = one_core(index % os.cpu_count()) if processes > 1 else None
        started.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=pin)
        )
    outputs = [process.communicate()[0] for process in started]
    if any(process.returncode for process in started):
        raise SystemExit(f"{backend} {strategy} x{processes} failed; its output:\n{outputs[0]}")
    return json.loads(outputs[0].strip().splitlines()[-1])["epoch_seconds"]


def one_core(core):
    """What a child process runs before the benchmark: keep to CPU core `core`."""
    return lambda: os.sched_setaffinity(0, {core})


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    args = parse_arguments()
    if args.worker:
        return worker(args)
    configurations = [
        ("TensorFlow, one process", "tensorflow", "default", 1),
        ("JAX, one process (compiled: the default)", "jax", "default", 1),
        ("JAX, one process, --no-jit (op by op)", "jax", "default", 1, "off"),
        ("JAX, two processes (one core each)", "jax", "multiworker", 2),
    ]
    before = Path("/proc/loadavg").read_text().split()[:3]
    seconds = {name: run_configuration(args, *rest) for name, *rest in configurations}
    after = Path("/proc/loadavg").read_text().split()[:3]
    reference = seconds[configurations[0][0]]
    print(
        f"\n{args.pairs} pairs at {args.size}x{args.size}, U-Net base {args.base} depth 4, global "
        f"batch {args.batch_size}, {args.epochs} timed epoch(s) after a warm-up, "
        f"{os.cpu_count()} CPU cores; load average (1, 5, 15 min) before {' '.join(before)}, "
        f"after {' '.join(after)}\n"
    )
    print("| configuration | seconds per epoch | time / TensorFlow's |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {value / reference:.2f} |")


if __name__ == "__main__":
    main()
