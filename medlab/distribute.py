"""Training beyond one device: data-parallel strategies, mixed precision and XLA, on TensorFlow
(tf.distribute) or on JAX (Keras' distribution API, `medlab.distribute_jax`).

A script calls `configure_scaling` once, before it builds any model or dataset, then builds and
compiles its models inside `scaling.scope()` and batches its data with `scaling.global_batch(n)`,
where `n` is the per-replica batch of its parameter block; Keras splits each global batch over
the replicas and averages the gradients, so the same parameters mean the same training on one
CPU or on eight GPUs:

    scaling = configure_scaling(p["strategy"], p["mixed_precision"], p["jit"], p["batch_size"])
    with scaling.scope():
        model = compile_unet(build_unet(...), "bce", 1e-4, jit_compile=scaling.jit)
    train_data = make_dataset(..., batch_size=scaling.global_batch(p["batch_size"]))

Scripts declare `SCALING` with their other parameters (`medlab.parameters`), so each gets its
flag, help and check from one place, and a typo fails before any data is read.

The backend is Keras' (`KERAS_BACKEND`, TensorFlow by default). On JAX the same calls give a
`keras.distribution.DataParallel`, also over several processes (`--strategy multiworker`), of
which only process 0 writes the run's folders (`Scaling.writes`).

TensorFlow and Keras are imported inside the functions that use them: the scripts import this
module for its flags and checks, which must answer without starting TensorFlow.
"""

import contextlib
import dataclasses
import json
import os

from medlab.errors import UserError
from medlab.parameters import Param, check_values

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("off", "float16", "bfloat16")
# Keras policy names; "mixed" keeps the variables in float32 and computes in 16 bits.
POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# CPU features that make bfloat16 arithmetic native (Intel Cooper Lake/Sapphire Rapids, AMD Zen 4).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# The newest Keras (major, minor) seen failing to train on several workers
# (see check_keras_trains_on_several_workers).
KERAS_MULTIWORKER_BROKEN_THROUGH = (3, 15)
# bfloat16 training is refused where one step's gradients on this map are further than this from
# exact (`bfloat16_gradient_error`); bfloat16's own rounding is 0.4%.
BFLOAT16_PROBE_SHAPE = (4, 256, 256, 8)
BFLOAT16_GRADIENT_TOLERANCE = 0.02

# The scaling parameters of every script, declared once (medlab.parameters): each gets a flag in the
# help's "scaling" group; BATCH_SIZE is per replica.
SCALING = {
    "strategy": Param(
        "auto",
        "auto (mirrored when several GPUs are visible, else default), default (one device), "
        "mirrored (all local GPUs, or all logical CPUs) or multiworker (several processes or "
        "machines, on the JAX backend: KERAS_BACKEND=jax and KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "_NUM_PROCESSES, _PROCESS_ID); BATCH_SIZE is per replica",
        "scaling",
        choices=STRATEGIES,
    ),
    "mixed_precision": Param(
        "off",
        "off, float16 (GPU) or bfloat16 (GPU; refused where its gradients come out wrong, as on "
        "CPUs); the output layer stays float32",
        "scaling",
        choices=PRECISIONS,
    ),
    "jit": Param(
        None,
        "compile the training step (model.compile(jit_compile=True): XLA on TensorFlow, jax.jit "
        "on JAX); not set: compiled on JAX, as Keras does there, and not on TensorFlow, where XLA "
        "rarely pays on a CPU; --no-jit runs it op by op",
        "scaling",
        type=bool,
    ),
}


@dataclasses.dataclass(frozen=True)
class Scaling:
    """The distribution strategy and compile options every model of a run is built with."""

    strategy: object
    jit: bool = False

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def global_batch(self, per_replica):
        return per_replica * self.replicas

    @property
    def backend(self):
        """Keras' backend: tensorflow or jax."""
        return "jax" if on_jax() else "tensorflow"

    @property
    def processes(self):
        """Processes that train together (several only for multiworker on JAX)."""
        return getattr(self.strategy, "processes", 1)

    @property
    def process_index(self):
        return getattr(self.strategy, "process_index", 0)

    @property
    def writes(self):
        """Whether this process writes the run's folders (process 0 of several, or the only one)."""
        return self.process_index == 0

    def scope(self):
        """Build, compile and train the models inside this scope."""
        return self.strategy.scope()


def single_device():
    """One device (default strategy), no XLA: training as before this module (tests, helpers)."""
    if on_jax():
        from medlab.distribute_jax import JaxStrategy

        return Scaling(JaxStrategy())
    import tensorflow as tf

    return Scaling(tf.distribute.get_strategy())


def on_jax():
    """Whether Keras runs on JAX (KERAS_BACKEND=jax) rather than on TensorFlow."""
    import keras

    return keras.backend.backend() == "jax"


def to_this_process(model):
    """After training over several processes, make `model` an ordinary model of this process
    (see `medlab.distribute_jax.to_this_process`); otherwise nothing to do."""
    if on_jax():
        from medlab.distribute_jax import to_this_process as localise

        localise(model)


def host_value(variable):
    """A variable's value as a NumPy array of this process. Over several JAX processes a
    replicated value spans them all, and each process holds its full copy."""
    import keras
    import numpy as np

    value = variable.value
    if on_jax() and not getattr(value, "is_fully_addressable", True):
        return np.asarray(value.addressable_data(0))
    return keras.ops.convert_to_numpy(value)


def model_scope(model):
    """The scope in which `model`'s variables are assigned: its tf.distribute strategy's on
    TensorFlow; on JAX every variable keeps the placement it was created with."""
    if on_jax():
        return contextlib.nullcontext()
    return model.distribute_strategy.scope()


def check_scaling(p):
    """Reject unknown --strategy / --mixed-precision values with a one-line `UserError`."""
    check_values(p, SCALING)


def configure_scaling(strategy="auto", mixed_precision="off", jit=None, batch_size=None):
    """Create the strategy and set the precision policy; call once, before any model or dataset.

    Prints the strategy, its replicas and, given the per-replica `batch_size`, the global batch,
    and whether the training step is compiled (`jit`: True, False or None for the backend's
    default, see `compiles`).
    """
    scaling = Scaling(make_strategy(strategy, batch_size), compiles(jit))
    configure_precision(mixed_precision)
    if scaling.jit:
        how = "jax.jit" if on_jax() else "XLA"
        print(f"{how}: the training step is compiled with jit_compile=True")
    return scaling


def compiles(jit):
    """Whether the training step is compiled: as `--jit`/`--no-jit` say, else (None) on JAX only.

    On JAX, Keras' own default compiles it: uncompiled, JAX runs op by op (a 256 px U-Net step
    took 1.4x as long). On TensorFlow the step is a graph either way and XLA rarely pays on a CPU,
    so it stays off unless asked.
    """
    return on_jax() if jit is None else bool(jit)


def make_strategy(name, batch_size=None):
    """A strategy by name (see `SCALING`), announced with its replicas: tf.distribute's on
    TensorFlow, Keras' distribution API on JAX (`medlab.distribute_jax`)."""
    check_scaling({"strategy": name, "mixed_precision": "off"})
    if on_jax():
        from medlab.distribute_jax import jax_strategy

        strategy = jax_strategy(name)
        describe_strategy(name, strategy, batch_size)
        return strategy
    import tensorflow as tf

    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        check_keras_trains_on_several_workers(os.environ["TF_CONFIG"])
        # Reads TF_CONFIG; must be created before TensorFlow runs any operation.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored" or (name == "auto" and gpu_count() > 1):
        strategy = tf.distribute.MirroredStrategy(devices=local_devices())
    else:
        strategy = tf.distribute.get_strategy()
    describe_strategy(name, strategy, batch_size)
    return strategy


def gpu_count():
    if on_jax():
        import jax

        return sum(device.platform == "gpu" for device in jax.local_devices())
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def local_devices():
    """Every local GPU, or every logical CPU when there is none (several only when configured)."""
    import tensorflow as tf

    return [
        d.name
        for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    ]


def describe_strategy(name, strategy, batch_size=None):
    replicas = strategy.num_replicas_in_sync
    kind = strategy.describe() if hasattr(strategy, "describe") else strategy_kind(strategy)
    line = f"strategy {name}: {kind}, {replicas} replica(s)"
    if batch_size is not None:
        line += f"; global batch {batch_size * replicas} = {batch_size} per replica x {replicas}"
    print(line)


def strategy_kind(strategy):
    """TensorFlow's class name in words: `_DefaultDistributionStrategy` is "one device"."""
    name = type(strategy).__name__
    return "one device (no distribution)" if name == "_DefaultDistributionStrategy" else name


def check_tf_config(text):
    """Raise a one-line `UserError` unless `text` is a usable multi-worker TF_CONFIG."""
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\' (see docs/scaling.md; several machines train on '
        "the JAX backend there)"
    )
    if not text:
        raise UserError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every machine; "
            f"{example}"
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        valid = (
            isinstance(workers, list)
            and workers
            and task["type"] in config["cluster"]
            and 0 <= int(task["index"]) < len(config["cluster"][task["type"]])
        )
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise UserError(
            f"TF_CONFIG is not a valid cluster description (a cluster with a worker list and "
            f"this machine's task type and index); {example}"
        )


def check_keras_trains_on_several_workers(tf_config, keras_version=None):
    """Refuse several workers with a Keras known to fail there (a one-line error, not a traceback).

    Up to `KERAS_MULTIWORKER_BROKEN_THROUGH`, Keras 3's `fit` under MultiWorkerMirroredStrategy
    with two or more workers fails before the first step (it reduces the first batch and the
    scalar logs across workers in ways that strategy rejects; keras-team/keras#20585). One worker
    runs; later Keras versions are allowed through so a fix is picked up without a change here.
    """
    import keras

    version = tuple(int(part) for part in (keras_version or keras.version()).split(".")[:2])
    workers = sum(
        len(hosts)
        for role, hosts in json.loads(tf_config)["cluster"].items()
        if role in ("worker", "chief")
    )
    if workers > 1 and version <= KERAS_MULTIWORKER_BROKEN_THROUGH:
        raise UserError(
            f"--strategy multiworker over {workers} workers fails in Keras "
            f"{'.'.join(map(str, version))} fit() (keras-team/keras#20585); train on the JAX "
            "backend instead (KERAS_BACKEND=jax, see docs/scaling.md), or use --strategy mirrored "
            "on one machine with several GPUs"
        )


def configure_precision(mode):
    """Set Keras' global dtype policy for `mode` (off, float16 or bfloat16) and return its name.

    Layers then compute in 16 bits and keep float32 variables; models keep their output layer in
    float32 (`dtype="float32"`) so that probabilities and losses are not rounded to 16 bits.
    """
    import keras

    check_precision(mode)
    policy = POLICIES[mode]
    keras.mixed_precision.set_global_policy(policy)
    if mode != "off":
        print(f"mixed precision: {policy} (16-bit compute, float32 variables and output layer)")
    return policy


def check_precision(mode):
    """Refuse, in one line, a precision this machine cannot train in, or trains wrong in.

    float16 needs a GPU (loss scaling is added by `model.compile`); bfloat16 needs a GPU or a CPU
    with native bfloat16, since elsewhere TensorFlow emulates it more slowly than float32, and
    gradients that match exact ones (`bfloat16_gradient_error`): TensorFlow's CPU kernels sum the
    gradients of a convolution in bfloat16, so a large feature map's bias gradient comes out
    hundreds of times too small, silently.
    """
    check_scaling({"strategy": "auto", "mixed_precision": mode})
    if mode == "float16" and not gpu_count():
        raise UserError(
            "--mixed-precision float16 needs a GPU and none is visible; use off on this machine"
        )
    if mode != "bfloat16":
        return
    check_native_bfloat16("--mixed-precision bfloat16", "off")
    error = bfloat16_gradient_error()
    if error > BFLOAT16_GRADIENT_TOLERANCE:
        raise UserError(
            f"--mixed-precision bfloat16 trains with wrong gradients here: {backend_name()}'s "
            f"kernels on this {'GPU' if gpu_count() else 'CPU'} sum a convolution's gradients in "
            f"bfloat16 ({error:.1%} off on a 4x256x256x8 map, docs/scaling.md); use off"
        )


def check_native_bfloat16(setting, instead):
    """Refuse `setting` in one line where bfloat16 is emulated (slower than float32): it needs a
    GPU or a CPU with AVX512-BF16/AMX."""
    if not (gpu_count() or cpu_supports_bfloat16()):
        raise UserError(
            f"{setting} needs a GPU or a CPU with AVX512-BF16/AMX and this machine has neither; "
            f"use {instead}"
        )


def bfloat16_gradient_error(shape=BFLOAT16_PROBE_SHAPE):
    """The largest relative error of one bfloat16 training step's gradients, against exact values.

    A 3x3 convolution plus bias of a map of ones with kernels of ones, as Keras computes a Conv2D
    layer (`keras.ops.conv` + `keras.ops.add`, which is TensorFlow's BiasAdd), on this backend and
    device; the loss is the float32 sum of its output, so the bias gradient is the number of
    output pixels (N*H*W) and each kernel tap's is the number of pixels it sees, both exact in
    float32. A correct bfloat16 step is within bfloat16's rounding (0.4%) of them.
    """
    import numpy as np
    from keras import ops

    batch, height, width, channels = shape
    images = ops.ones(shape, "bfloat16")
    kernel = np.ones((3, 3, channels, channels), np.float32)
    bias = np.zeros(channels, np.float32)

    def loss(kernel, bias):
        convolved = ops.conv(images, ops.cast(kernel, "bfloat16"), padding="same")
        return ops.sum(ops.cast(ops.add(convolved, ops.cast(bias, "bfloat16")), "float32"))

    kernel_gradient, bias_gradient = gradients(loss, kernel, bias)
    # A tap (i, j) of a "same" 3x3 convolution sees every pixel but one border row/column per
    # offset from the centre.
    rows = height - np.abs(np.arange(3) - 1)
    columns = width - np.abs(np.arange(3) - 1)
    exact_kernel = batch * np.outer(rows, columns)[:, :, None, None] * np.ones_like(kernel)
    exact_bias = np.full(channels, batch * height * width, np.float32)
    return max(
        float(np.max(np.abs(np.asarray(got, np.float32) - exact) / exact))
        for got, exact in ((kernel_gradient, exact_kernel), (bias_gradient, exact_bias))
    )


def gradients(loss, *arguments):
    """The gradients of the scalar `loss(*arguments)` with respect to each argument, on this
    backend (a tape on TensorFlow, `jax.grad` on JAX)."""
    if on_jax():
        import jax

        return jax.grad(loss, argnums=tuple(range(len(arguments))))(*arguments)
    import tensorflow as tf

    variables = [tf.constant(argument) for argument in arguments]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        value = loss(*variables)
    return [gradient.numpy() for gradient in tape.gradient(value, variables)]


def backend_name():
    return "JAX" if on_jax() else "TensorFlow"


def cpu_supports_bfloat16():
    try:
        with open("/proc/cpuinfo") as handle:
            flags = set(handle.read().split())
    except OSError:  # not Linux: no cheap way to tell, so assume no
        return False
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
