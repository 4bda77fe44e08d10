"""One declaration per parameter: its lab default, help sentence, group, choices and range.

A task declares its parameters once, as {name: `Param`}, in the module that implements them
(`medlab.distribute.SCALING` for the scaling ones) or in the task's declaration module under
`medlab/app/`. Everything else is made from the declaration: the command-line flag and its help
(`medlab.app.cli`), the range checks (`check_values`), the effective-parameter table and the
HParams columns. The scripts' parameter blocks hold only values; a value that differs from the
declared default is the user's edit.
"""

import dataclasses
import math

from medlab.errors import UserError

# The help page's sections, in this order.
GROUPS = {
    "data": "data",
    "model": "model",
    "training": "training",
    "evaluation": "evaluation",
    "output": "output",
    "scaling": "scaling (one machine's CPU is the default; docs/scaling.md)",
}

# Seeds Keras, NumPy and Python all accept (NumPy's legacy seeding stops at 2**32 - 1).
SEED_RANGE = (0, 2**32 - 1)


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter: `default` is the lab's value; `low`/`high` bound numbers (`high_open`: the
    upper bound itself is excluded); `type` is needed only when the default is None; `flag`
    renames the flag (`target_class` -> `--class`); `hint` ends an out-of-range message."""

    default: object
    help: str
    group: str
    low: float = None
    high: float = None
    choices: tuple = None
    high_open: bool = False
    type: type = None
    flag: str = None
    hint: str = ""

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"group {self.group!r} is not one of {', '.join(GROUPS)}")
        if not self.help.strip():
            raise ValueError("every parameter needs a help sentence")

    @property
    def kind(self):
        """The value's type: the declared one, else the default's."""
        return self.type or (str if self.default is None else type(self.default))

    def rule(self):
        """The allowed values in words: 'one of a, b', '[0, 1)', '>= 1', or ''."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is not None and self.high is not None:
            return f"[{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f">= {self.low}"
        if self.high is not None:
            return f"<= {self.high}"
        return ""

    def check(self, name, value):
        """A one-line `UserError` for a value of the wrong type, not a choice, or out of range."""
        flag = flag_name(name, self)
        if value is None and self.default is None:
            return
        if not self.accepts_type(value):
            raise UserError(
                f"{flag} {value!r} is not a {TYPE_WORDS.get(self.kind, self.kind.__name__)}; "
                "fix it in the parameter block or on the command line"
            )
        if self.choices and value not in self.choices:
            raise UserError(f"{flag} {value} is unknown; choose {self.rule()}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} {value} is not a number; give a finite value")
        too_low = self.low is not None and value < self.low
        too_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if too_low or too_high:
            raise UserError(f"{flag} {value} is out of range {self.rule()}{self.hint}")

    def accepts_type(self, value):
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, self.kind)


TYPE_WORDS = {bool: "True/False value", int: "whole number", float: "number", str: "text"}


def flag_name(name, param=None):
    """`batch_size` -> `--batch-size`, or the declared flag."""
    return (param.flag if param and param.flag else None) or "--" + name.replace("_", "-")


def defaults(declared):
    """{name: the lab's default} of a declaration."""
    return {name: param.default for name, param in declared.items()}


def check_values(values, declared):
    """Check every declared parameter's value (from whichever layer it came)."""
    for name, param in declared.items():
        if name in values:
            param.check(name, values[name])
