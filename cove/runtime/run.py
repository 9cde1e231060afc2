"""`run`: create + start, then (in the foreground) wait, forward signals, delete."""

from __future__ import annotations

import _signal
import os

from cove.runtime.create import CreateOptions, create
from cove.runtime.delete import delete
from cove.runtime.start import start

# Signals a foreground runtime passes on to the container, as runc does.
_FORWARD = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH


def wait_forwarding(pid: int) -> int:
    """Wait for `pid` (our child, or adopted as subreaper); return its shell-style code."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in _FORWARD:
        _signal.signal(s, forward)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


def run(opts: CreateOptions, detach: bool) -> int:
    create(opts, subreaper=not detach)
    try:
        st = start(opts.root, opts.id)
    except BaseException:
        delete(opts.root, opts.id, force=True)
        raise
    if detach:
        return 0
    try:
        return wait_forwarding(st.pid)
    finally:
        delete(opts.root, opts.id, force=True)
