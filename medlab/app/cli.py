"""Command-line flags generated from a script's parameter block.

Every entry of the block gets a flag (`batch_size` -> `--batch-size`); only flags the user actually
typed override anything, so the precedence "defaults < experiment settings < flags" is explicit.
"""

import argparse
import math

from medlab.app.runs import UserError

# Seeds Keras, NumPy and Python all accept (NumPy's legacy seeding stops at 2**32 - 1).
SEED_RANGE = (0, 2**32 - 1)


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: a mistake is one `error:` line and exit code 2
    (through `main_guard`), and no number given on the command line may be NaN or infinite."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for name, value in vars(parsed).items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{flag} {value} is not a number; give a finite value")
            if name == "seed" and value is not None and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
                raise UserError(
                    f"--seed {value} is out of range [{SEED_RANGE[0]}, {SEED_RANGE[1]}]"
                )
        return parsed


def add_parameter_flags(parser, parameters, help_texts, choices=None, flag_names=None, types=None):
    """One flag per parameter (`batch_size` -> `--batch-size`), with its help text and default.

    `choices` limits a flag's values, `flag_names` renames a flag (`target_class` -> `--class`) and
    `types` gives a parameter whose default is None its type. Booleans get `--x/--no-x`. Every
    flag defaults to None, so `typed_flags` can tell what the user typed.
    """
    choices, flag_names, types = choices or {}, flag_names or {}, types or {}
    for name, default in parameters.items():
        flag = flag_names.get(name, "--" + name.replace("_", "-"))
        text = f"{help_texts.get(name, '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=text
            )
            continue
        kind = types.get(name, type(default) if default is not None else str)
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            type=kind,
            choices=choices.get(name),
            help=text,
            metavar=None if name in choices else name.upper(),
        )
    return parser


def add_preset_flag(parser, presets, help_text):
    parser.add_argument("--preset", choices=list(presets), default=None, help=help_text)
    return parser


def resolve_parameters(parameters, typed, *layers):
    """The run's parameters: the defaults, then each layer in order (the synthetic demo's settings,
    a preset, an experiment), then the flags the user typed, which always win."""
    resolved = dict(parameters)
    for layer in layers:
        resolved.update(layer or {})
    resolved.update(typed)
    return resolved


def typed_flags(args, parameters):
    """The parameters the user set on the command line, as {name: value}."""
    return {
        name: getattr(args, name) for name in parameters if getattr(args, name, None) is not None
    }


def check_range(name, value, low=None, high=None, high_open=False, hint=""):
    """A one-line `UserError` for a value outside [low, high] (or [low, high)), NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"--{name.replace('_', '-')} {value} is not a number; give a finite value")
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        upper = f"{high})" if high_open else f"{high}]"
        span = f"[{low}, {upper}" if high is not None else f">= {low}"
        raise UserError(f"--{name.replace('_', '-')} {value} is out of range {span}{hint}")
