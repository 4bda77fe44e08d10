"""What a run was computed on, kept in its folder as `data.json`, and the check that it still is.

A training run writes the record before it trains: every data file it reads (its path under the
data folder, size and SHA-256), the files each split or fold validates on, and, with groups, the
group file's digest. Every later command that relies on the run reads the record back and
compares it with the data as it is now:

- `--resume` (all three scripts) refuses in one line when a file was added, removed or changed,
  or when the split comes out differently: the run would continue on other data, and images it
  trained on would be scored as validation.
- `evaluate --held-out` refuses when a validated image changed since its model was trained.

A run folder written before records were kept has none: it is checked by name only, and the
command says so.
"""

import json
from pathlib import Path

from medlab.atomic import fingerprint, write_json
from medlab.errors import UserError, first_line

RECORD = "data.json"
SHOWN = 3  # file names quoted in a message


def describe(data_dir, files, validation=(), groups_file=None):
    """The record of a run on `files` (paths inside `data_dir`); `validation` lists, per split
    or fold, the files it validates on; `groups_file` is the --groups CSV, if any."""
    root = Path(data_dir)
    return {
        "data_dir": str(data_dir),
        "files": {relative(path, root): fingerprint(path) for path in files},
        "validation": [sorted(relative(path, root) for path in part) for part in validation],
        "groups_file": fingerprint(groups_file) if groups_file else None,
    }


def relative(path, root):
    """`path` as the record names it: relative to the data folder, with forward slashes."""
    path = Path(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a name, not a path: the segmentation split lists image names
        return path.as_posix()


def save(folder, record):
    write_json(Path(folder) / RECORD, record)


def load(folder):
    """The record in `folder`, or None for a run written before records were kept; a damaged
    record is a one-line `UserError`."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("files"), dict):
            raise ValueError("no file list")
        return record
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(
            f"{path} is damaged ({first_line(error)}); restore it, or start a new run"
        ) from None


def changes(recorded, current, compare_split=True):
    """What differs between two records, as short phrases ("2 added (a.png, b.png)"); empty
    when the run's data is the same."""
    old, new = recorded["files"], current["files"]
    found = []
    for what, names in (
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
        ("changed", sorted(n for n in set(old) & set(new) if old[n] != new[n])),
    ):
        if names:
            found.append(f"{len(names)} {what} ({quoted(names)})")
    if recorded.get("groups_file") != current.get("groups_file"):
        found.append("the --groups file changed")
    if compare_split and not found and recorded.get("validation") != current.get("validation"):
        found.append("the split differs")
    return found


def quoted(names):
    more = f", ... {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_resume(folder, current, compare_split=True):
    """Refuse to resume the run in `folder` on data other than its own (one line, exit 2)."""
    recorded = load(folder)
    if recorded is None:
        print(f"note: {folder} has no {RECORD} (an older run); its data is checked by name only")
        return
    found = changes(recorded, current, compare_split)
    if found:
        raise UserError(
            f"the data in {recorded['data_dir']} is not what the run in {folder} was started on "
            f"({'; '.join(found)}): resuming would train and score it on other images; put the "
            "data back as it was, or start a new run (without --resume)"
        )


def check_validated(folder, paths, data_dir):
    """Refuse held-out scores of files (`paths`, in `data_dir`) that changed since the run in
    `folder` validated on them: the score would be of other images than it was validated on."""
    recorded = load(folder)
    if recorded is None:
        return
    current = describe(data_dir, paths)["files"]
    changed = sorted(
        name for name, digest in current.items() if recorded["files"].get(name) != digest
    )
    if changed:
        raise UserError(
            f"{len(changed)} validation file(s) in {data_dir} are not those the run in {folder} "
            f"validated on ({quoted(changed)}): --held-out would score other images; put the data "
            "back as it was, or drop --held-out"
        )
