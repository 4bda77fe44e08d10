"""Where a run's data comes from: the folder the user named, else the user's folder under data/,
else the built-in synthetic demo set, announced in a banner, with the demo's smaller settings."""

from pathlib import Path

from medlab.images import note_data_folder
from medlab.synthetic.common import synthetic_banner


def locate_data(data_dir, user_folder, make_synthetic, what, demo, typed):
    """(folder, demo settings that apply): `data_dir` if given, else `user_folder` if it exists
    (no demo settings), else the folder `make_synthetic()` writes, with `demo`. A `user_folder` of
    None always takes the synthetic set (a demo that only generated data can show).

    `what` names the generated set in the banner; the banner shows the demo settings the run will
    use, after `typed`: what wins over the demo (a preset, then the flags the user typed).
    """
    if data_dir:
        return note_data_folder(data_dir), {}
    if user_folder is not None and Path(user_folder).exists():
        return note_data_folder(user_folder), {}
    folder = note_data_folder(make_synthetic())
    shown = {**demo, **{k: v for k, v in typed.items() if k in demo}}
    why = "" if user_folder is None else f" (no {user_folder} found)"
    synthetic_banner(f"{what}{why}", folder, ", ".join(f"{k}={v}" for k, v in shown.items()))
    return folder, dict(demo)
