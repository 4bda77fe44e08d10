"""Reading images of any size, depth and channel count into float arrays in [0, 1].

Images are decoded and resized one at a time, so several-megapixel photos never sit in memory
together. OpenCV decodes PNG, JPEG, BMP and TIFF at 8 or 16 bits; colour comes back as RGB.
"""

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from medlab.errors import UserError

# OpenCV warns about harmless TIFF tag quirks on stderr; real decoding failures still raise below.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# Files that are never images and never worth a warning.
SILENT_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
# Smallest side accepted: below it an "image" is a placeholder or an export error, not a picture.
MIN_SIDE = 8


def list_images(folder, note=print):
    """Image files in `folder`, sorted by name; other files are skipped with a note."""
    folder = Path(folder)
    images, skipped = [], []
    for path in folder_entries(folder):
        if path.name.startswith(".") or path.is_dir() or path.name.lower() in SILENT_FILES:
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else skipped).append(path)
    if skipped and note:
        names = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        note(f"note: ignoring {len(skipped)} non-image file(s) in {folder}: {names}")
    return images


# The folders this process has listed as data (image folders, class folders, data folders):
# nothing is written inside one, where the next training would read it as data.
_data_folders = set()


def folder_entries(folder):
    """The sorted entries of `folder`, or a one-line `UserError` when it cannot be listed; the
    folder counts as data from now on (`check_outside_data`)."""
    try:
        entries = sorted(Path(folder).iterdir())
        note_data_folder(folder)
        return entries
    except PermissionError:
        raise UserError(
            f"cannot read folder {folder}: permission denied; make it readable (chmod +rx) or "
            "move it out of the data folder"
        ) from None
    except OSError as error:
        raise UserError(f"cannot read folder {folder}: {error.strerror or error}") from None


def check_outside_data(folder, flag):
    """Refuse an output `folder` inside a folder this process reads data from (a class folder, the
    data folder): what a command wrote there would be read as data by the next training."""
    folder = Path(folder).resolve()
    for data in sorted(_data_folders):
        if folder == data or data in folder.parents:
            raise UserError(
                f"{flag} {folder} is inside {data}, which holds the data read here: what is "
                f"written there would be read as data next time; pass {flag} outside it"
            )


def note_data_folder(folder):
    """Count `folder` as data for the rest of this command (`check_outside_data`); returns it.
    A data folder that is a file is refused here, for every command that reads one."""
    if Path(folder).is_file():
        raise UserError(
            f"data folder {folder} is a file, not a folder; pass --data-dir with the folder that "
            'holds the data (README.md, "Data layouts")'
        )
    _data_folders.add(Path(folder).resolve())
    return Path(folder)


def forget_data_folders():
    """A new command of this process starts with no data folders."""
    _data_folders.clear()


def decode(path):
    """Decode one file as it is stored (any depth, 1/3/4 channels) or raise `UserError`."""
    data = file_bytes(path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise unreadable(path)
    return check_plausible(path, image)


def file_bytes(path):
    """The bytes of an image file, or a one-line `UserError` (missing, broken link, denied)."""
    check_file(path)
    try:
        # np.fromfile + imdecode copes with non-ASCII paths
        return np.fromfile(str(path), dtype=np.uint8)
    except PermissionError:
        raise denied(path) from None


# Figures of one image (explain's overlays) show it at its own size, up to about this many pixels
# a side: a larger image is decoded at 1/2, 1/4 or 1/8 of its size.
DISPLAY_MAX_SIDE = 2048
REDUCED_COLOUR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
REDUCED_COLOUR[8] = cv2.IMREAD_REDUCED_COLOR_8
REDUCED_GREY_8 = cv2.IMREAD_REDUCED_GRAYSCALE_8
# `decode` (IMREAD_UNCHANGED) never turns a photo by its EXIF orientation, so the models train and
# predict on the pixels as stored; the reduced decoding must not turn it either, or a map would be
# drawn over another picture than the one it was computed on.
KEEP_ORIENTATION = cv2.IMREAD_IGNORE_ORIENTATION


def decode_for_display(path):
    """`decode`, but an image far larger than `DISPLAY_MAX_SIDE` comes from OpenCV's reduced-size
    decoding (8-bit colour), so an 8000-pixel photo never sits in memory at full size as floats.
    Call `decode` first: the checks of the full-size pixels (NaN, range) are its job."""
    data = file_bytes(path)
    probe = cv2.imdecode(data, REDUCED_GREY_8 | KEEP_ORIENTATION) if data.size else None
    if probe is None:  # no reduced decoding of this format (float TIFF): `decode` reads it
        return decode(path)
    longest = 8 * max(probe.shape[:2])
    factor = next((f for f in (8, 4, 2) if longest // f >= DISPLAY_MAX_SIDE), 1)
    if factor == 1:
        return decode(path)
    reduced = cv2.imdecode(data, REDUCED_COLOUR[factor] | KEEP_ORIENTATION)
    return check_plausible(path, reduced) if reduced is not None else decode(path)


def check_file(path):
    """A one-line `UserError` for a path that is no readable file: missing, broken link, folder."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(
            f"{path} is a broken link (it points to {os.readlink(path)}, which does not "
            "exist); fix the link or remove it"
        )
    if path.is_dir():
        raise UserError(
            f"{path} is a folder, not an image file; pass image files (png, jpg, bmp, tif)"
        )
    if not path.exists():
        raise UserError(f"image {path} does not exist; check the path")


def check_plausible(path, image):
    """Refuse a decoded image that cannot be an X-ray or photo (too small, fully transparent, NaN
    or infinite pixels); warn once about a float image far outside [0, 1] (it would be clipped)."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise UserError(
            f"image {path} is only {width}x{height} pixels, too small to hold anything "
            f"(at least {MIN_SIDE}x{MIN_SIDE}); replace or remove it"
        )
    if image.ndim == 3 and image.shape[2] == 4 and not image[..., 3].any():
        raise UserError(
            f"image {path} is fully transparent (alpha 0 everywhere), so it shows nothing; "
            "save it without transparency or remove it"
        )
    if image.dtype.kind == "f":
        check_float_range(path, image)
    return image


# A float image is expected in [0, 1]; beyond this margin its values are clipped to black or white.
FLOAT_MARGIN = 0.01
_warned_range = set()


def check_float_range(path, image):
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise UserError(
            f"image {path} has {bad} pixel(s) that are not numbers (NaN or infinite); re-export "
            "it without them or remove it"
        )
    low, high = float(image.min()), float(image.max())
    if (low < -FLOAT_MARGIN or high > 1 + FLOAT_MARGIN) and str(path) not in _warned_range:
        _warned_range.add(str(path))  # once per file, although loaders decode it again
        print(
            f"warning: float image {path} has values from {low:g} to {high:g}, outside [0, 1]; "
            "they are clipped (above 1 turns white), so rescale it to [0, 1] or save it as "
            "8- or 16-bit"
        )


def unreadable(path):
    return UserError(
        f"cannot read image {path}: the file is corrupt or not an image; replace or remove it"
    )


def denied(path):
    return UserError(
        f"cannot read {path}: permission denied; make it readable (chmod +r) or remove it"
    )


def to_unit_range(image):
    """Integer images to float32 in [0, 1] by their type's range; float images are clipped."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def mask_levels(image):
    """A decoded mask as float32 (height, width) in [0, 1] on its data type's scale, the one rule
    every reader of masks follows: 0/255 (8-bit), 0/65535 (16-bit) and float masks in [0, 1] mean
    what they say, and an integer mask whose values are only 0 and 1 is a label mask. Never scaled
    by its own maximum, which would turn a lung-free JPEG mask's compression noise (0..11) into
    lung. A colour mask counts its strongest channel (red lungs are lungs, not 30% grey)."""
    if image.dtype.kind in "ui" and image.size and int(image.max()) == 1:
        levels = image.astype(np.float32)
    else:
        levels = to_unit_range(image)
    if levels.ndim == 3 and levels.shape[2] == 4:
        levels = levels[..., :3] * levels[..., 3:4]  # transparent is background
    return levels.max(axis=2) if levels.ndim == 3 else levels


def to_channels(image, channels):
    """Convert an OpenCV image (gray, BGR or BGRA) to `channels` (1 or 3) in RGB order."""
    if image.ndim == 3 and image.shape[2] == 4:
        # Composite transparency over black, as a viewer would show an X-ray's empty border.
        alpha = image[..., 3:4]
        image = image[..., :3] * alpha
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if channels == 1:
        return (
            image[..., None]
            if image.ndim == 2
            else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]
        )
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize(image, size, interpolation=None):
    """Resize to `size` (height, width); area averaging when shrinking, bilinear when growing."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if interpolation is None:
        shrinking = image.shape[0] > height or image.shape[1] > width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized[..., None] if resized.ndim == 2 else resized


def load_image(path, size, channels=1):
    """One image as float32 (height, width, channels) in [0, 1], RGB order when `channels` is 3."""
    image = to_channels(to_unit_range(decode(path)), channels)
    return resize(image, size).astype(np.float32)


def save_image(path, image):
    """Save a float image in [0, 1] (gray or RGB) as an 8-bit PNG/JPEG."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    pixels = np.round(image * 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), pixels):
        raise UserError(f"cannot write image {path}: {why_unwritable(Path(path).parent)}")


# Below this many free bytes a failed write is blamed on a full disk.
FULL_DISK_BYTES = 1 << 20


def why_unwritable(folder):
    """Why a file in `folder` could not be written, in words that say what to do."""
    try:
        if shutil.disk_usage(folder).free < FULL_DISK_BYTES:
            return "the disk is full; free space or pass --out on a disk with room"
    except OSError:
        pass
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable (permission denied); pass --out with a writable folder"
    return "the image could not be encoded; check the file name and the folder"


def load_all(paths, loader, shape, title):
    """Apply `loader` to each path, one at a time with a progress bar, into one float32 array."""
    array = np.empty((len(paths), *shape), dtype=np.float32)
    from medlab.progress import progress  # Keras' progress bar: TensorFlow starts here

    bar = progress(len(paths), title)
    for i, path in enumerate(paths):
        array[i] = loader(path)
        bar.update(i + 1)
    return array
