"""`--resume RUN_FOLDER` of the classifier scripts: the run folder of an interrupted training is
reopened with the parameters it started with (its config.json), and its trainings continue from
their last committed epochs (`medlab.checkpoints`).

Every training run folder is locked while a process works in it, so a second `--resume` of the
same run (or a resume of a run still going) is refused in one line instead of corrupting it.
"""

import json
import os
import shutil
from pathlib import Path

from medlab.app import runs
from medlab.app.cli import Resolved
from medlab.errors import UserError, first_line
from medlab.parameters import defaults

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are simply not locked there
    fcntl = None

_held = {}  # folder: the open descriptor that holds its lock, for the life of the process


def add_resume_flag(parser):
    parser.add_argument(
        "--resume",
        metavar="RUN_FOLDER",
        help="continue an interrupted training in its run folder, from its last complete epoch, "
        "with the settings it started with",
    )
    return parser


def saved_run(run_dir, typed, preset, declared):
    """(parameters, config) of the run being resumed: its parameters (a `cli.Resolved` of the
    `declared` ones, sources as recorded) and everything its config.json records; `run_dir` is
    locked from now on. Flags cannot change a run midway, so any flag typed (or a preset) is
    refused."""
    given = [f"--{name.replace('_', '-')}" for name in typed] + (["--preset"] if preset else [])
    if given:
        raise UserError(
            f"--resume continues a run with the settings it started with, so {' '.join(given)} "
            "cannot be applied; drop them, or start a new run to change settings"
        )
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not the folder of an earlier run (no config.json); pass the run "
            "folder that the interrupted run printed"
        )
    if not (run_dir / runs.INCOMPLETE).is_file():
        raise UserError(f"{run_dir} is a finished run (no {runs.INCOMPLETE}); nothing to resume")
    try:
        config = json.loads(path.read_text())["parameters"]
        missing = [name for name in declared if name not in config]
        if missing:
            raise ValueError(f"no {', '.join(missing[:3])}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} is damaged ({first_line(error)}); restore it, or start a new run"
        ) from None
    runs.check_saved_parameters(config, defaults(declared), path)
    lock(run_dir)
    sources = config.get("sources") if isinstance(config.get("sources"), dict) else {}
    values = {name: config[name] for name in declared}
    return Resolved(values, {name: sources.get(name, "saved") for name in declared}, {}), config


def open_run(resume, out, name, script, config):
    """The run folder: `resume` reopened, or a new folder under `out` with `config` saved; locked,
    and marked incomplete with the command that resumes it."""
    if resume:
        run_dir = Path(resume)
        print(f"resuming the run in {run_dir}")
    else:
        run_dir = runs.new_run_dir(out, name)
        lock(run_dir)
        runs.save_config(run_dir, config)
    runs.resume_with(f"python {script} --resume {run_dir}", run_dir)
    return run_dir


def finish(run_dir):
    """The run is complete: the checkpoints go, and the folder no longer looks unfinished."""
    shutil.rmtree(Path(run_dir) / "backup", ignore_errors=True)
    runs.mark_complete(run_dir)
    runs.resume_with(None)


def lock(folder):
    """Hold an exclusive lock on `folder` until the process ends, or a one-line `UserError` when
    another process holds it."""
    folder = Path(folder).resolve()
    if fcntl is None or folder in _held:
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        raise UserError(
            f"{folder} is in use by another process (its training, or another --resume of it, "
            "is still running); wait for it to end or stop it, then resume"
        ) from None
    _held[folder] = handle
