"""TensorFlow's Python warnings after `quiet_tensorflow` (conftest calls it, as the scripts do):
the retracing notice that predicting on a new batch size triggers is dropped, others stay."""

import logging

import tensorflow as tf


def test_retracing_notices_are_dropped_and_other_warnings_kept(caplog):
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        tf.get_logger().warning("5 of the last 10 calls to <f> triggered tf.function retracing.")
        tf.get_logger().warning("a warning a user should see")
    assert [record.getMessage() for record in caplog.records] == ["a warning a user should see"]
