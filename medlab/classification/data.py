"""Two-class image folders: the lab layout `Set/{train,validation}/{A,B}/` or a flat `Set/{A,B}/`.

Labels follow the alphabetical order of the class folder names (A=0, B=1) and are attached to
each file path, so no later step can shuffle files and labels apart.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlab.errors import UserError
from medlab.images import list_images, load_all, load_image

SPLIT_NAMES = ("train", "validation")


@dataclass
class ClassSplit:
    """File paths and labels of the training and validation sets, with the class names."""

    class_names: list
    train_paths: list
    train_labels: np.ndarray
    val_paths: list
    val_labels: np.ndarray
    layout: str

    def describe(self):
        counts = lambda labels: ", ".join(
            f"{name}={int(np.sum(labels == i))}" for i, name in enumerate(self.class_names)
        )
        return (
            f"classes {self.class_names[0]}=0, {self.class_names[1]}=1 ({self.layout} layout); "
            f"train {len(self.train_paths)} ({counts(self.train_labels)}), "
            f"validation {len(self.val_paths)} ({counts(self.val_labels)})"
        )


def class_folders(folder):
    folder = Path(folder)
    names = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if len(names) != 2:
        raise UserError(
            f"{folder} must hold exactly two class folders, found {len(names)} "
            f"({', '.join(names) or 'none'}); put each class's images in its own folder"
        )
    return names


def labelled_files(folder, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        images = list_images(Path(folder) / name)
        if not images:
            raise UserError(
                f"class folder {Path(folder) / name} has no images (png, jpg, bmp, tif); "
                "add images or remove the folder"
            )
        paths += images
        labels += [label] * len(images)
    return paths, np.array(labels, dtype=np.int32)


def stratified_split(labels, val_fraction, seed, class_names=None):
    """Indices of a seeded split that keeps each class's share in both parts."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, int(round(len(members) * val_fraction)))
        if n_val >= len(members):
            name = class_names[label] if class_names else label
            raise UserError(
                f"class {name} has only {len(members)} image(s): too few to keep "
                f"{val_fraction:.0%} of them for validation and train on the rest; lower "
                "--val-fraction or add images"
            )
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return np.sort(train), np.sort(val)


def load_class_split(root, val_fraction=0.2, seed=0):
    """Find the class folders under `root` in either layout and return the labelled split."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data folder {root} does not exist; pass --data-dir with a folder laid out as "
            "Set/{train,validation}/{ClassA,ClassB}/ or Set/{ClassA,ClassB}/"
        )
    if all((root / name).is_dir() for name in SPLIT_NAMES):
        class_names = class_folders(root / "train")
        if class_folders(root / "validation") != class_names:
            raise UserError(
                f"{root}/train and {root}/validation must hold the same two class folders"
            )
        train_paths, train_labels = labelled_files(root / "train", class_names)
        val_paths, val_labels = labelled_files(root / "validation", class_names)
        return ClassSplit(class_names, train_paths, train_labels, val_paths, val_labels, "lab")
    class_names = class_folders(root)
    paths, labels = labelled_files(root, class_names)
    train, val = stratified_split(labels, val_fraction, seed, class_names)
    return ClassSplit(
        class_names,
        [paths[i] for i in train],
        labels[train],
        [paths[i] for i in val],
        labels[val],
        "flat",
    )


def load_arrays(paths, size, channels, label="loading images"):
    """Decode and resize `paths` one at a time into one float32 array (N, H, W, C) in [0, 1]."""
    return load_all(
        paths,
        lambda path: load_image(path, size, channels),
        (size[0], size[1], channels),
        f"{label}: {len(paths)} images at {size[0]}x{size[1]}x{channels}",
    )
