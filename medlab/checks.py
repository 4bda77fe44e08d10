"""The input gate: every file checked before any output folder is made, and warnings for data that
decodes but looks wrong (masks of another size, no lung anywhere, blank images)."""

import os
import tempfile
from pathlib import Path

import numpy as np

from medlab.errors import UserError, disk_full
from medlab.images import check_outside_data, decode, mask_levels, to_channels, to_unit_range

# An image whose grey levels spread less than this (standard deviation on [0, 1]) looks blank:
# a real X-ray spreads over about 0.2, a slightly noisy empty frame over 0.001.
LOW_CONTRAST_STD = 0.01


def unique_stems(paths, folder):
    """{stem: path} of `paths`, or a `UserError` listing the stems that two files share."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path.name)
    twins = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if twins:
        listed = "; ".join(" and ".join(names) for names in list(twins.values())[:5])
        raise UserError(
            f"{len(twins)} file name(s) in {folder} are used twice with another extension "
            f"({listed}); pairing goes by name, so keep one file of each"
        )
    return {path.stem: path for path in paths}


def check_pairs(image_paths, mask_paths, warn=print):
    """Decode every image and mask once (a bad file stops here with one line) and warn about data
    that looks wrong. Returns True when every mask is empty."""
    resized, blank, faint, lung = [], [], [], False
    from medlab.progress import progress  # Keras' progress bar: TensorFlow starts here

    bar = progress(len(image_paths), f"checking {len(image_paths)} image/mask pairs")
    for i, (image_path, mask_path) in enumerate(zip(image_paths, mask_paths)):
        image, mask = decode(image_path), decode(mask_path)
        if image.shape[:2] != mask.shape[:2]:
            resized.append(
                f"{mask_path.name} {mask.shape[1]}x{mask.shape[0]} "
                f"vs {image.shape[1]}x{image.shape[0]}"
            )
        if float(np.std(to_channels(to_unit_range(image), 1))) < LOW_CONTRAST_STD:
            blank.append(image_path.name)
        levels = mask_levels(mask)
        if levels.any() and not (levels >= 0.5).any():
            faint.append(mask_path.name)
        lung = lung or bool((levels >= 0.5).any())
        bar.update(i + 1)
    show = lambda names: ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    if resized:
        warn(
            f"warning: {len(resized)} mask(s) differ in size from their image ({show(resized)}); "
            "both are resized to --size, so check that each mask belongs to its image"
        )
    if blank:
        warn(
            f"warning: {len(blank)} image(s) have almost no contrast ({show(blank)}); they look "
            "blank, so check them"
        )
    if faint:
        warn(
            f"warning: {len(faint)} mask(s) have only faint values ({show(faint)}), below half "
            "their type's range (128 of 255): they are read as empty (lung-free). If they mark "
            "lungs, save them as 0/255 or 0/1"
        )
    if not lung:
        warn(
            f"warning: all {len(mask_paths)} masks are empty (no lung pixel), so the scores say "
            "nothing; check that the Mask folder holds lung masks (lungs white on black)"
        )
    return not lung


def check_writable_folder(folder, flag):
    """Create `folder` if needed and prove it is writable, or raise a one-line `UserError`; never
    inside a folder the command reads data from."""
    check_outside_data(folder, flag)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        if disk_full(error):
            raise UserError(
                f"the disk of {flag} {folder} is full; free space or pass {flag} on a disk with "
                "room"
            ) from None
        raise UserError(
            f"{flag} {folder} is not a writable folder ({error.strerror or error}); "
            f"pass {flag} with a folder you can write to"
        ) from None


def check_output_folder(folder, flag):
    """Refuse, without creating anything, a `folder` that cannot be made or written to (a file, a
    path under a file, a folder without write permission), that already holds files (an earlier
    invocation's outputs, or images: nothing is overwritten or mixed with data), or that lies
    inside a folder the command reads data from."""
    folder = Path(folder)
    check_outside_data(folder, flag)
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(
            f"{flag} {folder} already holds files (an earlier run's outputs, or data), which "
            f"this command would overwrite or mix with its own; pass a new or empty folder"
        )
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"is under {existing}, which is a file"
        raise UserError(f"{flag} {folder} {where}; pass a folder (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {folder}: {existing} is not writable (permission denied); pass {flag} with "
            "a folder you can write to"
        )


def check_fits_in_memory(needed_gb, what, lower):
    """Refuse, before anything is built or written, work that needs more memory than the machine
    has (a process that tries is killed by the system, or aborts, and leaves a half folder)."""
    total_gb = machine_memory_gb()
    if total_gb is not None and needed_gb > total_gb:
        raise UserError(
            f"{what} needs about {needed_gb:.3g} GB, more than this machine's {total_gb:.3g} GB; "
            f"lower {lower}"
        )


def machine_memory_gb():
    """The machine's memory in GiB, None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        return None
