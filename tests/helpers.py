"""Helpers that several test files use: running a script as a user would, reading TensorBoard
event files, and writing a tiny folder of synthetic chest X-ray pairs."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import metadata

from medlab.synthetic.xray import chest_xray

ROOT = Path(__file__).resolve().parents[1]


def run_script(script, *args, cwd=None, timeout=600):
    """Run a root-level script as a user would and return the completed process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tensorboard_events(log_dir):
    """{tag: [steps]} of the event files directly inside `log_dir` (not its subfolders)."""
    tags = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def experiment_in(folder):
    """The HParams experiment written in `folder` or below (exactly one file must hold it)."""
    found = []
    for path in Path(folder).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == metadata.EXPERIMENT_TAG:
                    content = value.metadata.plugin_data.content
                    found.append(metadata.parse_experiment_plugin_data(content))
    assert len(found) == 1
    return found[0]


def images_in(folder):
    """{tag: [(step, number of images)]} of the image summaries in `folder`."""
    images = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    count = len(tf.make_ndarray(value.tensor)) - 2  # width, height, then PNGs
                    images.setdefault(value.tag, []).append((event.step, count))
    return images


def xray_folder(root, count=10, size=48):
    for i in range(count):
        image, mask = chest_xray(np.random.default_rng([1, i]), size)
        for folder, array in (("Image", image), ("Mask", mask.astype(np.float32))):
            (root / "X_ray" / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "X_ray" / folder / f"p{i}.png"), np.uint8(array * 255))
    return root / "X_ray"


def script_of(module):
    """What a classifier script (cam_vgg16 or transfer_vgg16) hands to its application's `start`,
    for tests that resolve its command lines as a run would."""
    from medlab.app.classification.script import Script

    return Script(
        module.__name__.removesuffix("_vgg16"),
        module.PARAMETERS,
        module.PRESETS,
        module.SYNTHETIC_DEMO,
        module.COMMANDS,
        module.__doc__,
        getattr(module, "SHORTCUT_DEMO", None),
    )


def resolved_values(module, argv, demo=None):
    """The parameters a run of the classifier script `module` with `argv` uses, under `demo`."""
    from medlab.app.classification.script import command_line, resolve

    script = script_of(module)
    args, typed = command_line(script, argv)
    return resolve(script, typed, demo, args.preset).values
