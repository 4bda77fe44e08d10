"""Names of the files that `predict` and `explain` write: one per input image, never two alike.

An output keeps its image's stem (`x.png` -> `x_mask.png`); two images of the same stem from
different folders (`a/x.png`, `b/x.png`) get their folder's name in front (`a_x`, `b_x`), and any
name still taken a number (`x-2`). Names too long for the file system are shortened first.
`outputs.csv` in the output folder lists which image each name belongs to.
"""

import csv
import io
from pathlib import Path

from medlab.atomic import write_text_atomic

# Most file systems allow 255 bytes per name; keep room for a suffix such as "-12".
NAME_MAX = 255
COUNTER_ROOM = 6
MAPPING = "outputs.csv"


def output_names(paths, suffixes):
    """One unique base name per image of `paths` (in order), short enough for every suffix."""
    limit = NAME_MAX - max(len(suffix.encode()) for suffix in suffixes) - COUNTER_ROOM
    fit = lambda name: name.encode()[:limit].decode(errors="ignore")
    paths = [Path(path) for path in paths]
    stems = [fit(path.stem) for path in paths]
    # Case-blind, as on macOS and Windows, where x.png and X.png would overwrite each other.
    folders = {}
    for path, stem in zip(paths, stems):
        folders.setdefault(stem.lower(), set()).add(path.resolve().parent)
    shared = {stem for stem, parents in folders.items() if len(parents) > 1}
    wanted = [
        fit(f"{path.resolve().parent.name}_{stem}") if stem.lower() in shared else stem
        for path, stem in zip(paths, stems)
    ]
    names, taken = [], set()
    for name in wanted:
        unique, number = name, 1
        while unique.lower() in taken:
            number += 1
            unique = f"{name}-{number}"
        taken.add(unique.lower())
        names.append(unique)
    return names


def write_output_names(out_dir, paths, suffixes):
    """`output_names`, with `outputs.csv` (image, and each file written for it) in `out_dir`."""
    names = output_names(paths, suffixes)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", *(f"file{suffix.split('.')[0]}" for suffix in suffixes)])
    for path, name in zip(paths, names):
        writer.writerow([str(path), *(f"{name}{suffix}" for suffix in suffixes)])
    write_text_atomic(Path(out_dir) / MAPPING, text.getvalue())
    return names
