"""Data-parallel training on JAX through Keras' distribution API: one process, or several processes
on one or many machines, each driving its own devices.

`make_strategy` (medlab.distribute) calls `jax_strategy` when Keras runs on JAX. For multiworker it
first starts JAX's distributed runtime with `keras.distribution.initialize`, which reads

    KERAS_DISTRIBUTION_JOB_ADDRESSES   host:port of process 0, the coordinator (or every process's,
                                       comma-separated, process 0's first)
    KERAS_DISTRIBUTION_NUM_PROCESSES   how many processes take part
    KERAS_DISTRIBUTION_PROCESS_ID      this process's number, 0 to NUM_PROCESSES - 1

or, when none is set, lets JAX find them in the cluster environments it knows (SLURM, Open MPI,
Cloud TPU pods, Kubernetes). Then `keras.distribution.DataParallel` spans every device of every
process: each process feeds its own slice of every global batch (`SlicedDataParallel`), and the
gradients are averaged over all devices, so the run trains like one process fitting the whole
global batch. After `fit` every variable gets a copy in each process (`to_this_process`), so
evaluating and saving need no other process.
"""

import atexit
import contextlib
import os
import re
import sys
import threading

import jax
import keras
import numpy as np
import tensorflow as tf

from medlab.errors import UserError

ADDRESS, PROCESSES, PROCESS_ID = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
RECIPE = "docs/scaling.md"


class SlicedDataParallel(keras.distribution.DataParallel):
    """DataParallel whose `tf.data` batches are global batches, of which every process keeps its own
    contiguous slice (process 0 the first rows). Every process runs the same seeded pipeline, so
    the slices of one step are disjoint and together are the global batch of a one-process run.

    A last partial batch is topped up with its own first pairs to a multiple of the replicas, since
    every device takes the same number of rows; any other batch is split as it is.
    """

    def distribute_dataset(self, dataset):
        replicas, processes, index = self.num_model_replicas, self.num_processes, process_index()
        return dataset.map(
            lambda *batch: process_slice(batch, replicas, processes, index)
        ).prefetch(tf.data.AUTOTUNE)


def process_slice(batch, replicas, processes, index):
    """Process `index`'s rows of every tensor of `batch` (a global batch): one `processes`-th of
    the rows, rounded up to whole rows per replica by repeating the batch's first rows."""
    rows = tf.shape(batch[0])[0]
    share = -(-rows // replicas) * replicas // processes
    order = tf.range(index * share, (index + 1) * share) % rows
    return tuple(tf.gather(part, order) for part in batch)


class JaxStrategy:
    """What `medlab.distribute.Scaling` needs of a strategy, for a Keras distribution on JAX (or
    none: one device)."""

    def __init__(self, distribution=None):
        self.distribution = distribution

    @property
    def num_replicas_in_sync(self):
        return 1 if self.distribution is None else self.distribution.num_model_replicas

    @property
    def processes(self):
        return jax.process_count()

    @property
    def process_index(self):
        return jax.process_index()

    @contextlib.contextmanager
    def scope(self):
        """The distribution, active while the model is built and trained; a lost process ends the
        run with a one-line error."""
        with self.distribution.scope() if self.distribution else contextlib.nullcontext():
            try:
                yield
            except Exception as error:  # a lost process surfaces as a runtime error of any kind
                if jax.process_count() == 1 or isinstance(error, UserError):
                    raise
                # Runs before JAX's own exit handshake, which would wait for the lost process
                # and then abort with a page of native logs.
                atexit.register(exit_now, 2)
                if not LOST_PEER.search(str(error)):
                    raise UserError(
                        f"process {jax.process_index()} of {jax.process_count()} stopped: "
                        f"{first_line(error)}"
                    ) from None
                raise UserError(lost_process_message(error)) from None

    def describe(self):
        if self.distribution is None:
            return "one device"
        devices = self.distribution.device_mesh.devices.size
        return (
            f"DataParallel over {devices} device(s) of {jax.process_count()} process(es), "
            f"this is process {jax.process_index()}"
        )


def jax_strategy(name):
    """The strategy `name` (see medlab.distribute.SCALING_HELP) on JAX."""
    if name == "multiworker":
        start_processes()
        return JaxStrategy(SlicedDataParallel(devices=jax.devices()))
    local = jax.local_devices()
    if name == "mirrored" or (name == "auto" and len(local) > 1 and local[0].platform != "cpu"):
        return JaxStrategy(SlicedDataParallel(devices=local))
    return JaxStrategy()


def start_processes(environ=os.environ):
    """`keras.distribution.initialize` from the KERAS_DISTRIBUTION_* variables, or from a cluster
    environment JAX detects; a one-line `UserError` when neither says who takes part."""
    check_process_variables(environ)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over TCP
    try:
        initialize_within(join_timeout(environ), environ)
    except (ValueError, RuntimeError) as error:
        if not any(name in environ for name in (ADDRESS, PROCESSES, PROCESS_ID)):
            raise UserError(
                f"--strategy multiworker found no cluster: set {ADDRESS}=HOST:PORT of process 0, "
                f"{PROCESSES} and {PROCESS_ID} on every process (see {RECIPE})"
            ) from None
        raise UserError(
            f"--strategy multiworker could not join the other processes at "
            f"{environ.get(ADDRESS)} ({first_line(error)}); check {ADDRESS} and that every "
            "process started"
        ) from None


JOIN_TIMEOUT = "MEDLAB_JOIN_TIMEOUT_S"  # seconds every process has to start (default 300)


def join_timeout(environ):
    try:
        return max(1.0, float(environ.get(JOIN_TIMEOUT, 300)))
    except ValueError:
        raise UserError(
            f"{JOIN_TIMEOUT}={environ[JOIN_TIMEOUT]} is not a number of seconds"
        ) from None


def initialize_within(seconds, environ):
    """`keras.distribution.initialize`, given `seconds` for every process to join. JAX waits in C++,
    deaf to SIGTERM, and aborts with a stack trace when a process never starts; here it waits in a
    thread, so this process says what it waits for, stops on SIGTERM or Ctrl-C, and ends in one
    line when the time is up."""
    joined, failure = threading.Event(), []

    def join():
        try:
            keras.distribution.initialize()
        except Exception as error:  # noqa: BLE001  (raised again in the calling thread)
            failure.append(error)
        finally:
            joined.set()

    where = environ.get(ADDRESS, "the address the cluster gives")
    print(f"--strategy multiworker: joining the other processes at {where} (up to {seconds:g} s)")
    threading.Thread(target=join, daemon=True).start()
    try:
        in_time = joined.wait(seconds)
    except KeyboardInterrupt as stop:  # SIGTERM or Ctrl-C (`runs.main_guard`'s handler)
        print("interrupted while joining the other processes", file=sys.stderr)
        exit_now(143 if type(stop).__name__ == "Terminated" else 130)
    if not in_time:
        print(
            f"error: --strategy multiworker: not every process joined at {where} within "
            f"{seconds:g} s; start all {environ.get(PROCESSES, 'the')} processes with the same "
            f"{ADDRESS}, or check that address (a longer wait: {JOIN_TIMEOUT})",
            file=sys.stderr,
        )
        exit_now(2)  # JAX's half-made client would hang an ordinary exit
    if failure:
        raise failure[0]


def check_process_variables(environ):
    """Refuse a partial or inconsistent set of KERAS_DISTRIBUTION_* variables in one line."""
    given = [name for name in (ADDRESS, PROCESSES, PROCESS_ID) if environ.get(name)]
    if not given:
        return  # a cluster environment may fill them in
    missing = sorted({ADDRESS, PROCESSES, PROCESS_ID} - set(given))
    if missing:
        raise UserError(
            f"--strategy multiworker needs {', '.join(missing)} as well as {', '.join(given)}; "
            f"set all three on every process (see {RECIPE})"
        )
    try:
        processes, index = int(environ[PROCESSES]), int(environ[PROCESS_ID])
    except ValueError:
        processes = index = -1
    if processes < 1 or not 0 <= index < processes:
        raise UserError(
            f"{PROCESSES}={environ[PROCESSES]} and {PROCESS_ID}={environ[PROCESS_ID]} do not fit: "
            f"the id must be a whole number from 0 to {PROCESSES} - 1"
        )


# What the collectives and JAX's coordination service say when another process has gone.
LOST_PEER = re.compile(
    r"gloo|connection|peer|heartbeat|coordinat|barrier|unavailable|deadline|socket", re.IGNORECASE
)


def lost_process_message(error):
    return (
        f"process {jax.process_index()} of {jax.process_count()} lost contact with the other "
        f"processes ({first_line(error)}); the last complete epoch is checkpointed: start every "
        "process again with --resume SUMMARY_FOLDER"
    )


def first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def exit_now(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def process_index():
    return jax.process_index()


def to_this_process(model):
    """Give every variable of `model` (and of its optimizer and metrics) an ordinary array on this
    process, after training over several processes.

    DataParallel replicates variables, so each process already holds their full values; only their
    placement spans the other processes, which would make every later prediction a step that all
    processes must run together.
    """
    if jax.process_count() == 1:
        return
    variables = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
    for variable in variables:
        value = np.asarray(variable.value.addressable_data(0))
        variable._layout = None  # Keras re-distributes assigned values to a variable's layout
        variable.assign(value)
