"""Fault injection for the crash tests: `MEDLAB_CRASH_AT=point:n` kills the process with SIGKILL the
n-th time it reaches `crash_point(point)`, exactly as `kill -9` would, at a moment a test names.
Unset (always, outside tests), `crash_point` does nothing."""

import os
import signal

_reached = {}


def crash_point(point):
    wanted = os.environ.get("MEDLAB_CRASH_AT", "")
    name, _, count = wanted.partition(":")
    if name != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
