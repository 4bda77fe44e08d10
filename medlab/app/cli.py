"""The command line and the effective parameters of a run, made from the task's declarations.

Precedence (each layer replaces only the values it names):

    lab defaults < demo settings (synthetic data only) < edits in the parameter block
        < preset < experiment < flags typed

A script's parameter block holds values only; a value that differs from the declared lab default
(`medlab.parameters.Param.default`) is an edit, and so beats the demo's settings. `resolve` returns
every value with its source, which `parameter_rows` turns into the table each run prints and
writes into summary.md.
"""

import argparse
import dataclasses
import difflib
import math
import re

from medlab.errors import UserError
from medlab.parameters import GROUPS, check_values, defaults, flag_name

SOURCES = ("lab", "demo", "edited", "preset", "experiment", "flag")


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: a mistake is one `error:` line and exit code 2
    (through `main_guard`), abbreviations are refused (`--epoch` names `--epochs`), no value typed
    may be blank ("" or spaces), no number NaN or infinite, and the help keeps the epilog's line
    breaks."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UserError(f"{message}{self.suggestion(message)} (see {self.prog} --help)")

    def suggestion(self, message):
        """'; did you mean --epochs?' for an unrecognised flag close to a real one."""
        typed = re.findall(r"(--[\w-]+)", message.partition("unrecognized arguments:")[2])
        options = [o for action in self._actions for o in action.option_strings]
        for flag in typed:
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            if close:
                return f"; did you mean {close[0]}?"
        return ""

    def _get_values(self, action, arg_strings):
        # The one place every value typed passes through, flags and arguments of every script and
        # command alike: a blank value means "nothing", and would otherwise fall back to a default
        # (`--resume ""` starting a whole new run).
        blank = next((text for text in arg_strings if not text.strip()), None)
        if blank is not None:
            name = "/".join(action.option_strings) or action.metavar or action.dest
            fix = f"give a value, or leave {name} out" if action.option_strings else "give one"
            self.error(f"argument {name}: {blank!r} is blank; {fix}")
        return super()._get_values(action, arg_strings)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for name, value in vars(parsed).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{flag_name(name)} {value} is not a number; give a finite value")
        return parsed


def add_parameter_flags(parser, declared, demo=None):
    """One flag per declared parameter, in the help's groups (data, model, training, ...): its
    help sentence, its choices, the lab default and the value the synthetic demo replaces it with.

    Every flag defaults to None, so `typed_flags` can tell what the user typed. Booleans get
    `--x/--no-x`. Returns {group: argparse group}, for the script's own flags.
    """
    demo = demo or {}
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for name, param in declared.items():
        # A default of None or "" means "not set", which the help sentence explains.
        shown = [f"default: {param.default}"] if param.default not in (None, "") else []
        if name in demo:
            shown.append(f"the synthetic demo: {demo[name]}")
        if not param.choices and (param.low is not None or param.high is not None):
            shown.insert(0, param.rule())
        text = f"{param.help} ({'; '.join(shown)})" if shown else param.help
        text = text.replace("%", "%%")
        options = {"dest": name, "default": None, "help": text}
        flag = flag_name(name, param)
        if param.kind is bool:
            groups[param.group].add_argument(flag, action=argparse.BooleanOptionalAction, **options)
            continue
        metavar = "{" + ",".join(map(str, param.choices)) + "}" if param.choices else name.upper()
        groups[param.group].add_argument(flag, type=param.kind, metavar=metavar, **options)
    return groups


def add_preset_flag(parser, presets, help_text):
    parser.add_argument(
        "--preset",
        choices=list(presets),
        default=None,
        help=f"{help_text}; a preset wins over your edits in PARAMETERS, a flag over the preset "
        "(default: none)",
    )
    return parser


def typed_flags(args, declared):
    """The parameters the user set on the command line, as {name: value}, each checked against its
    declaration at once (before any data is looked for or generated)."""
    typed = {
        name: getattr(args, name) for name in declared if getattr(args, name, None) is not None
    }
    check_values(typed, declared)
    return typed


def epilog(script, docstring, commands, top_layers):
    """The end of a script's help page: its subcommands, the examples of its docstring, and the
    precedence of its parameters (`top_layers`: those above the block's edits)."""
    return (
        f"{commands_epilog(script, commands)}\n\n{examples(docstring)}\n\nPrecedence: lab "
        "defaults < demo settings (synthetic data only) < your edits in PARAMETERS\n"
        f"< {top_layers} (docs/parameters.md)."
    )


def examples(docstring):
    """The `python ...` example lines of a script's docstring."""
    lines = [line.strip() for line in docstring.splitlines() if line.strip().startswith("python ")]
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def commands_epilog(script, commands):
    """The subcommands a script has besides training, each with its docstring's first line."""
    lines = [
        f"  {script} {name} ...  {command.__doc__.strip().splitlines()[0]}"
        for name, command in commands.items()
    ]
    return "commands (each has its own --help):\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Precedence and sources
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Resolved:
    """A run's parameters: `values`, the `sources` they came from, and the block edits that a
    preset, an experiment or a flag replaced (`overridden`: {name: the edited value})."""

    values: dict
    sources: dict
    overridden: dict

    def source(self, name):
        """'demo', or 'experiment; edited 0.0005 overridden' when an edit was replaced."""
        if name in self.overridden:
            return f"{self.sources[name]}; edited {show(self.overridden[name])} overridden"
        return self.sources[name]

    def cell(self, name):
        """'16 (demo)', or '0.001 (experiment; edited 0.0005 overridden)'."""
        return f"{show(self.values[name])} ({self.source(name)})"


def show(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def edits(block, declared, where):
    """The values of a parameter block that differ from the lab defaults: the user's edits.

    A name the declaration does not know is refused, with the closest declared name."""
    for name in block:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{where} has no parameter {name!r}{hint}")
    return {name: value for name, value in block.items() if value != declared[name].default}


def resolve(declared, block, typed, demo=None, preset=None, experiment=None, where="PARAMETERS"):
    """The checked parameters of a run, by the precedence in this module's docstring.

    Args:
        declared: {name: Param}, the lab's defaults.
        block: the values of the script's parameter block (`where` names it in messages).
        typed: the flags typed; demo, preset, experiment: the layers that apply, or None.
    """
    values, sources, overridden = defaults(declared), dict.fromkeys(declared, "lab"), {}
    layers = {
        "demo": demo,
        "edited": edits(block, declared, where),
        "preset": preset,
        "experiment": experiment,
        "flag": typed,
    }
    for source, layer in layers.items():
        for name, value in (layer or {}).items():
            if name not in declared:
                raise UserError(f"the {source} settings name an unknown parameter {name!r}")
            if sources[name] == "edited" and value != values[name]:
                overridden[name] = values[name]
            values[name], sources[name] = value, source
    check_values(values, declared)
    return Resolved(values, sources, overridden)


def parameter_rows(columns, names):
    """Rows of the effective-parameter table: one per parameter in `names`, one column per run in
    `columns` ({column: Resolved}), each cell 'value (source)'; returns (rows, column headers)."""
    rows = [
        {"parameter": name, **{column: r.cell(name) for column, r in columns.items()}}
        for name in names
    ]
    return rows, ["parameter", *columns]


def text_table(rows, columns):
    """The table as aligned plain text, for the console."""
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(row[c]).ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def print_parameters(columns, names):
    """The effective parameters with their sources, as every run prints them before training."""
    rows, headers = parameter_rows(columns, names)
    print(f"parameters (source: {', '.join(SOURCES)}):")
    print(text_table(rows, headers))
