"""Per-lab guard process: cleans a lab up when its owner dies without doing it.

Started by :class:`netns.Lab` with a pipe on stdin, in its own session (so a terminal's Ctrl-C does not
reach it). It blocks reading stdin. EOF means the owner is gone or finished:

* the owner tore the lab down normally: the state file is gone, nothing to do;
* the owner wrote ``detach`` (``python -m netns up``): the lab is meant to outlive it, nothing to do;
* otherwise (SIGKILL, ``os._exit``, a crash): clean up from the state file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from netns import state


def main(argv: list[str]) -> int:
    path = Path(argv[1])
    data = sys.stdin.buffer.read()
    if b"detach" in data:
        return 0
    record = state.read_state(path)
    if record is None:
        return 0
    state.cleanup(record)
    path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
