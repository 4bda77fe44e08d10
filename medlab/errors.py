"""The error every layer raises for a problem the user can fix, and its one-line form.

Library code raises `UserError` with one sentence that names the file or value and the fix; the
scripts' entry guard (`medlab.app.runs.main_guard`) prints it as `error: ...` and exits with 2.
"""


class UserError(Exception):
    """A problem with the user's input or parameters: reported in one line, exit code 2."""


def first_line(error, limit=160):
    """An exception's first line (or its type), short enough for a one-line message."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
