"""tf.distribute strategies, precision policies and XLA as the scripts use them."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT

import unet
from medlab import distribute
from medlab.classification.train import compile_classifier
from medlab.classification.vgg import build_vgg16_style
from medlab.errors import UserError


def test_mirrored_on_two_cpus_matches_one_device_for_the_same_seed_and_global_batch():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "medlab" / "two_replica_training.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        "strategy auto: one device (no distribution), 1 replica(s)" in result.stdout
    )  # CPUs are not GPUs
    assert (
        "strategy mirrored: MirroredStrategy, 2 replica(s); global batch 8 = 4 per replica x 2"
        in result.stdout
    )
    assert outcome["replicas"] == [1, 2]
    single, mirrored = outcome["losses"]
    assert single[-1] < single[0]  # it learned, so equal weights mean something
    np.testing.assert_allclose(mirrored, single, rtol=1e-5)
    assert outcome["max_weight_difference"] < 1e-5 * outcome["max_weight"]


def test_default_strategy_has_one_replica_and_the_global_batch_is_printed(capsys):
    scaling = distribute.configure_scaling("default", batch_size=6)
    assert scaling.replicas == 1 and scaling.global_batch(6) == 6 and not scaling.jit
    assert (
        "strategy default: one device (no distribution), 1 replica(s); "
        "global batch 6 = 6 per replica x 1" in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "not a valid cluster description"),
        (
            '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
            "not a valid cluster",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "not a valid cluster",
        ),
    ],
)
def test_multiworker_without_a_usable_tf_config_is_a_one_line_error(monkeypatch, text, message):
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UserError, match=message) as error:
        distribute.make_strategy("multiworker")
    assert "\n" not in str(error.value)


TWO_MACHINES = json.dumps(
    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 1}}
)


def test_a_two_machine_tf_config_is_valid_but_refused_while_keras_cannot_train_on_it():
    distribute.check_tf_config(TWO_MACHINES)
    with pytest.raises(UserError, match="fails in Keras 3.15 fit.*#20585.*KERAS_BACKEND=jax"):
        distribute.check_keras_trains_on_several_workers(TWO_MACHINES, "3.15.0")
    distribute.check_keras_trains_on_several_workers(
        TWO_MACHINES, "3.16.0"
    )  # a fixed Keras may try
    one_worker = json.dumps(
        {"cluster": {"worker": ["localhost:2222"]}, "task": {"type": "worker", "index": 0}}
    )
    distribute.check_keras_trains_on_several_workers(one_worker, "3.15.0")


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode", ["float16", "bfloat16"])
def test_16_bit_modes_need_hardware_that_runs_them(monkeypatch, restore_policy, mode):
    monkeypatch.setattr(distribute, "gpu_count", lambda: 0)
    monkeypatch.setattr(distribute, "cpu_supports_bfloat16", lambda: False)
    with pytest.raises(UserError, match=f"--mixed-precision {mode} needs"):
        distribute.configure_precision(mode)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_keeps_the_output_layers_in_float32(monkeypatch, restore_policy):
    monkeypatch.setattr(distribute, "cpu_supports_bfloat16", lambda: True)
    monkeypatch.setattr(distribute, "bfloat16_gradient_error", lambda: 0.0)  # as where it is right
    assert distribute.configure_precision("bfloat16") == "mixed_bfloat16"
    model = unet.build_unet((16, 16, 1), base=2, depth=2)
    classifier = build_vgg16_style((32, 32, 1), base=2, dense_units=4, dense_layers=1)
    assert model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("down0_conv1").variable_dtype == "float32"
    for layer in (model.get_layer("mask"), classifier.get_layer("prediction")):
        assert layer.compute_dtype == "float32"
    assert model.predict(np.zeros((1, 16, 16, 1), np.float32), verbose=0).dtype == np.float32
    assert distribute.configure_precision("off") == "float32"


def relative_gradient_error(dtype_policy, reference_policy="float32"):
    """The relative error (norm) of each gradient of one Conv2D step in `dtype_policy` against the
    same step in `reference_policy`: same weights, a 4x256x256x8 map of random values."""
    images = np.random.default_rng(0).uniform(size=(4, 256, 256, 8)).astype(np.float32)

    def step(policy):
        keras.utils.set_random_seed(0)
        layer = keras.layers.Conv2D(8, 3, padding="same", dtype=policy)
        layer.build(images.shape)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(layer(images), tf.float32) ** 2)
        return [g.numpy() for g in tape.gradient(loss, [layer.kernel, layer.bias])]

    return [
        float(np.linalg.norm(got - reference) / np.linalg.norm(reference))
        for got, reference in zip(step(dtype_policy), step(reference_policy))
    ]


def test_bfloat16_training_is_refused_wherever_its_gradients_are_not_float32s(
    monkeypatch, restore_policy
):
    # As on a CPU with AVX512-BF16 (this test must not depend on the CI machine's CPU).
    monkeypatch.setattr(distribute, "cpu_supports_bfloat16", lambda: True)
    kernel_error, bias_error = relative_gradient_error("mixed_bfloat16")
    if max(kernel_error, bias_error) > 0.05:  # e.g. TensorFlow 2.21's CPU BiasAddGrad: 0.99
        with pytest.raises(UserError, match="bfloat16 trains with wrong gradients") as error:
            distribute.configure_precision("bfloat16")
        assert "\n" not in str(error.value) and "use off" in str(error.value)
        assert keras.mixed_precision.global_policy().name == "float32"
    else:  # kernels that sum in float32: bfloat16 trains, within its rounding of float32
        assert distribute.configure_precision("bfloat16") == "mixed_bfloat16"
    # The probe the refusal rests on agrees with the float32 comparison above.
    assert (distribute.bfloat16_gradient_error() > distribute.BFLOAT16_GRADIENT_TOLERANCE) == (
        max(kernel_error, bias_error) > 0.05
    )


def test_the_bfloat16_probe_finds_exact_gradients_where_the_sums_are_right(monkeypatch):
    # float32 arithmetic in place of bfloat16: the probe's exact values must then be met.
    from keras import ops

    monkeypatch.setattr(ops, "ones", lambda shape, dtype: keras.ops.zeros(shape, "float32") + 1)
    real_cast = ops.cast
    monkeypatch.setattr(
        ops, "cast", lambda x, dtype: real_cast(x, "float32" if dtype == "bfloat16" else dtype)
    )
    assert distribute.bfloat16_gradient_error() < 1e-6


def test_jit_reaches_the_compiled_model():
    model = unet.build_unet((16, 16, 1), base=2, depth=2)
    assert unet.compile_unet(model, "bce", 1e-3, jit_compile=True).jit_compile is True
    assert unet.compile_unet(model, "bce", 1e-3).jit_compile is False
    classifier = build_vgg16_style((32, 32, 1), base=2, dense_units=4, dense_layers=1)
    assert compile_classifier(classifier, 1e-3, jit_compile=True).jit_compile is True
    assert compile_classifier(classifier, 1e-3).jit_compile is False


def test_the_training_step_is_compiled_as_typed_else_on_jax_only(capsys):
    # On TensorFlow (this process) not set means not compiled; the JAX side is checked by
    # test_jax_backend.py, which trains there with the shipped setting.
    assert distribute.configure_scaling("default", jit=None).jit is False
    assert distribute.configure_scaling("default", jit=True).jit is True
    assert "XLA: the training step is compiled" in capsys.readouterr().out


@pytest.mark.parametrize("flags, value", [([], None), (["--jit"], True), (["--no-jit"], False)])
def test_jit_keeps_its_flags_and_not_typing_it_leaves_the_backend_to_choose(flags, value):
    from helpers import script_of

    import transfer_vgg16
    from medlab.app.classification.script import command_line

    assert command_line(script_of(transfer_vgg16), flags)[0].jit is value
    assert distribute.SCALING["jit"].default is None  # the shipped blocks hold it (test_cli.py)


def test_transfer_and_cam_take_the_same_flags_and_refuse_unknown_values():
    import cam_vgg16
    import transfer_vgg16
    from medlab.app.classification import cam_parameters, transfer_parameters, transfer_run
    from medlab.app.segmentation import parameters as segmentation_parameters
    from medlab.parameters import check_values

    for declared in (cam_parameters, transfer_parameters, segmentation_parameters):
        assert {n: declared.DECLARED[n] for n in distribute.SCALING} == distribute.SCALING
    with pytest.raises(UserError, match="--strategy tpu is unknown"):
        transfer_run.check_parameters({**transfer_vgg16.PARAMETERS, "strategy": "tpu"})
    with pytest.raises(UserError, match="--mixed-precision fp8 is unknown"):
        check_values({**cam_vgg16.PARAMETERS, "mixed_precision": "fp8"}, cam_parameters.DECLARED)


def test_each_process_takes_its_own_slice_of_every_global_batch():
    from medlab.distribute_jax import process_slice

    def rows(batch_rows, replicas, processes):
        batch = (tf.range(batch_rows), tf.range(batch_rows) * 10)
        slices = [process_slice(batch, replicas, processes, i) for i in range(processes)]
        for images, masks in slices:
            np.testing.assert_array_equal(masks, images * 10)  # images and masks stay paired
        return [images.numpy().tolist() for images, _ in slices]

    assert rows(8, 2, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rows(8, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # two devices per process
    assert rows(6, 1, 1) == [[0, 1, 2, 3, 4, 5]]
    # A last partial batch is topped up to whole rows per replica with its first pairs.
    assert rows(3, 2, 2) == [[0, 1], [2, 0]]
    assert rows(1, 2, 2) == [[0], [0]]


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "needs KERAS_DISTRIBUTION_JOB_ADDRESSES, "),
        (
            {
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": "host1:1234",
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": "2",
            },
            "the id must be a whole number from 0 to",
        ),
    ],
)
def test_an_incomplete_cluster_description_is_a_one_line_error(variables, message):
    from medlab.distribute_jax import check_process_variables

    with pytest.raises(UserError, match=message) as error:
        check_process_variables(variables)
    assert "\n" not in str(error.value)
    check_process_variables({})  # nothing set: a cluster environment may say who takes part
