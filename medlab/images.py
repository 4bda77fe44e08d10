"""Reading images of any size, depth and channel count into float arrays in [0, 1].

Images are decoded and resized one at a time, so several-megapixel photos never sit in memory
together. OpenCV decodes PNG, JPEG, BMP and TIFF at 8 or 16 bits; colour comes back as RGB.
"""

import os
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
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.name.lower() in SILENT_FILES:
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else skipped).append(path)
    if skipped and note:
        names = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        note(f"note: ignoring {len(skipped)} non-image file(s) in {folder}: {names}")
    return images


def decode(path):
    """Decode one file as it is stored (any depth, 1/3/4 channels) or raise `UserError`."""
    check_file(path)
    try:
        # np.fromfile + imdecode copes with non-ASCII paths
        data = np.fromfile(str(path), dtype=np.uint8)
    except PermissionError:
        raise denied(path) from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise unreadable(path)
    return check_plausible(path, image)


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
    """Refuse a decoded image that cannot be an X-ray or photo (too small, fully transparent)."""
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
    return image


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
        raise UserError(f"cannot write image {path}; check that the folder is writable")


def load_all(paths, loader, shape, title):
    """Apply `loader` to each path, one at a time with a progress bar, into one float32 array."""
    array = np.empty((len(paths), *shape), dtype=np.float32)
    from medlab.progress import progress  # Keras' progress bar: TensorFlow starts here

    bar = progress(len(paths), title)
    for i, path in enumerate(paths):
        array[i] = loader(path)
        bar.update(i + 1)
    return array
