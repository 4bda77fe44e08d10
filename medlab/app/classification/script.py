"""What the two classifier scripts share before and after their pipelines: the settings a script
hands over by keyword (`Script`), its flags and the precedence of its parameters, and the run
(`ClassifierRun`: the data found and split, the run folder, resume, the end of the run).

`cam_run.start` and `transfer_run.start` build on it, each with its task's data, checks and
report."""

import dataclasses
from pathlib import Path

from medlab.app import cli, data_record, resume
from medlab.app.classification import cam_parameters, transfer_parameters

DECLARED = {"cam": cam_parameters.DECLARED, "transfer": transfer_parameters.DECLARED}
PRESET_HELP = {
    "cam": "lab: the handout's network and settings exactly (the defaults); recommended: what "
    "learnt best on real data (docs/gradcam.md)",
    "transfer": "settings of the from-scratch model and the class weights: lab (the handout's "
    "Lab 2 model exactly: the defaults) or recommended (docs/transfer.md)",
}


@dataclasses.dataclass(frozen=True)
class Script:
    """What a classifier script hands to `start`, by keyword: its parameter block, its named
    settings (presets), the settings of its synthetic demo, its subcommands and its docstring."""

    task: str  # "cam" or "transfer"
    parameters: dict
    presets: dict
    demo: dict
    commands: dict
    doc: str
    shortcut_demo: dict = None  # cam_vgg16.py --shortcut: the demo of the marker set

    @property
    def name(self):
        return f"{self.task}_vgg16.py"

    @property
    def declared(self):
        return DECLARED[self.task]

    @property
    def where(self):
        return f"PARAMETERS in {self.name}"


def lab_preset(declared, names):
    """The `lab` named setting: the declared defaults (the handout's values) of `names`. Over the
    synthetic demo's settings and the edits in PARAMETERS it restores the handout; on real data
    with no edits it changes nothing."""
    return {name: declared[name].default for name in names}


def parser(script):
    """The training command line: one flag per declared parameter, --preset and --resume."""
    extra = ""
    if script.shortcut_demo:
        extra = f"\nWith --shortcut the demo settings are {script.shortcut_demo}."
    parsed = cli.Parser(
        prog=script.name,
        description=script.doc.split("\n")[0],
        epilog=cli.epilog(script.name, script.doc, script.commands, "preset < flags typed") + extra,
    )
    cli.add_parameter_flags(parsed, script.declared, script.demo)
    return resume.add_resume_flag(
        cli.add_preset_flag(parsed, script.presets, PRESET_HELP[script.task])
    )


def command_line(script, argv):
    """(parsed arguments, the parameters typed as flags) of a training command line."""
    args = parser(script).parse_args(argv)
    return args, cli.typed_flags(args, script.declared)


def resolve(script, typed, demo, preset):
    """The lab's defaults < the demo settings (synthetic data only) < your edits in PARAMETERS <
    the preset < the flags typed; checked against the declarations."""
    return cli.resolve(
        script.declared,
        script.parameters,
        typed,
        demo,
        script.presets.get(preset),
        where=script.where,
    )


def banner_settings(script, typed, preset):
    """What the synthetic banner shows the run will use: your edits, the preset and the flags."""
    edits = cli.edits(script.parameters, script.declared, script.where)
    return {**edits, **script.presets.get(preset, {}), **typed}


def table_column(preset):
    """The header of the parameter table's one column: it names the preset the run used."""
    return "value (source)" if not preset else f"value (source; --preset {preset})"


def print_parameters(script, resolved, preset):
    cli.print_parameters({table_column(preset): resolved}, list(script.declared))


def parameter_table(script, resolved, preset):
    """(rows, headers) of summary.md's parameter table."""
    return cli.parameter_rows({table_column(preset): resolved}, list(script.declared))


class ClassifierRun:
    """One training run of a classifier script: its parameters with their sources, the data it
    trains on, and its run folder once `open_folder` has made (or reopened) it."""

    def __init__(self, script, args, typed, resolved, data_folder, demo):
        self.script, self.args, self.typed = script, args, typed
        self.resolved, self.data_folder, self.demo = resolved, Path(data_folder), demo
        self.preset = args.preset
        self.params = resolved.values
        self.folder = None

    def open_run(self, name, config):
        """The run folder: `--resume`'s reopened, or a new one with config.json (`config` and
        each value's source)."""
        sources = {"sources": {name: self.resolved.source(name) for name in self.script.declared}}
        config = {**self.params, **config, **sources}
        self.folder = resume.open_run(
            self.args.resume, self.params["out"], name, self.script.name, config
        )
        if not self.args.resume:
            data_record.save(self.folder, self.data_record())
        return self.folder

    def data_record(self):
        """What this run trains and validates on (`medlab.app.data_record`)."""
        split = self.split
        files = [*split.train_paths, *split.val_paths]
        return data_record.describe(self.data_folder, files, [split.val_paths])

    def check_resumed_data(self):
        """On --resume, the split data is the run's own: refused in one line if it changed."""
        if self.args.resume:
            data_record.check_resume(self.args.resume, self.data_record())

    def end(self):
        """The run is complete: checkpoints removed, folder marked complete."""
        resume.finish(self.folder)
