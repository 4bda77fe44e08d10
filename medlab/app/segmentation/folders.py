"""The folders of one invocation of `main_segmentation.py`: the summary folder (new, or the one
`--resume` names, locked while a process works in it) and the plan saved in it. Used before
TensorFlow starts (`setup`) and by the run (`run`), so neither imports the other."""

from pathlib import Path

from medlab.app import data_record
from medlab.app.resume import lock
from medlab.app.runs import new_run_dir, resume_with, write_json
from medlab.errors import UserError
from medlab.pairs import find_pairs

# Next to runs.json: where each value of the plan came from, for the table of a resumed run.
SOURCES_FILE = "sources.json"


def summary_folder(out, resume):
    """A new folder for this invocation (or the one being resumed) and the stamp its runs share;
    locked while this process works in it, and marked with the command that resumes it."""
    folder = checked_summary_folder(resume) if resume else new_run_dir(out, "summary")
    lock(folder)  # held while this process works in it: a second --resume is refused
    resume_with(f"python main_segmentation.py --resume {folder}", folder)
    return folder


def checked_summary_folder(resume):
    """The summary folder `resume` names, or a one-line `UserError` when it is none."""
    folder = Path(resume)
    if not (folder / "runs.json").is_file():
        raise UserError(
            f"{folder} is not a summary folder of an earlier run (no runs.json); "
            "pass the *-summary folder that the interrupted run printed"
        )
    return folder


def save_plan(folder, plan):
    """runs.json (each experiment's values, which --resume reads) and sources.json."""
    write_json(folder / "runs.json", {name: r.values for name, r in plan.items()})
    sources = {name: {key: r.source(key) for key in r.values} for name, r in plan.items()}
    write_json(folder / SOURCES_FILE, sources)


def pairs_record(p, splits=()):
    """The data record (`medlab.app.data_record`) of the pairs in p["data_dir"], images and
    masks, with the images each of `splits` (training, validation indices) validates on."""
    images, masks = find_pairs(p["data_dir"])
    groups = str(p.get("groups", "none"))
    return data_record.describe(
        p["data_dir"],
        [*images, *masks],
        [[images[i] for i in validation] for _, validation in splits],
        groups if groups.lower().endswith(".csv") else None,
    )
