"""Command-line flags generated from a script's parameter block.

Every entry of the block gets a flag (`batch_size` -> `--batch-size`); only flags the user actually
typed override anything, so the precedence "defaults < experiment settings < flags" is explicit.
"""
import argparse

from medlab.runs import UserError


def add_parameter_flags(parser, parameters, help_texts):
    for name, default in parameters.items():
        flag = "--" + name.replace("_", "-")
        text = f"{help_texts.get(name, '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, dest=name, default=None, type=kind, help=text,
                                metavar=name.upper())
    return parser


def typed_flags(args, parameters):
    """The parameters the user set on the command line, as {name: value}."""
    return {name: getattr(args, name) for name in parameters if getattr(args, name, None) is not None}


def check_range(name, value, low=None, high=None, high_open=False, hint=""):
    """Raise a one-line `UserError` for a parameter outside [low, high] (or [low, high))."""
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        upper = f"{high})" if high_open else f"{high}]"
        span = f"[{low}, {upper}" if high is not None else f">= {low}"
        raise UserError(f"--{name.replace('_', '-')} {value} is out of range {span}{hint}")
