"""Task 4's data layout: X-rays in `Image/`, lung masks in `Mask/`, paired by identical file name.

Listing and pairing read no pixels and start no TensorFlow, so a wrong folder is reported at once,
before the application loads anything.
"""

from pathlib import Path

from medlab.checks import unique_stems
from medlab.errors import UserError
from medlab.images import list_images, note_data_folder


def find_pairs(data_dir):
    """Image and mask paths of `data_dir/{Image,Mask}`, paired by identical file stem, sorted.

    Raises:
        UserError: a folder is missing or empty, two files share a stem, or a file has no partner.
    """
    data_dir = Path(data_dir)
    note_data_folder(data_dir)  # the whole of it is data: no output goes inside
    folders = {name: data_dir / name for name in ("Image", "Mask")}
    for folder in folders.values():
        if not folder.is_dir():
            raise UserError(
                f"missing folder {folder}; put X-rays in {data_dir}/Image and lung masks "
                f"with the same file names in {data_dir}/Mask"
            )
    by_stem = {name: unique_stems(list_images(folder), folder) for name, folder in folders.items()}
    for name, files in by_stem.items():
        if not files:
            raise UserError(f"folder {folders[name]} has no images (png, jpg, bmp, tif); add them")
    images, masks = by_stem["Image"], by_stem["Mask"]
    lonely_images, lonely_masks = sorted(images.keys() - masks), sorted(masks.keys() - images)
    if lonely_images or lonely_masks:
        show = lambda names: ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise UserError(
            f"images and masks in {data_dir} do not pair up by file name: "
            f"{len(lonely_images)} image(s) without a mask ({show(lonely_images)}), "
            f"{len(lonely_masks)} mask(s) without an image ({show(lonely_masks)}); "
            "give each image a mask with the same name"
        )
    stems = sorted(images)
    return [images[s] for s in stems], [masks[s] for s in stems]


def validation_count(count, val_fraction):
    """How many of `count` pairs a `val_fraction` split holds out (at least one)."""
    return max(1, int(round(count * val_fraction)))
