"""`run`: create + start, then (in the foreground) wait, forward signals, delete.

With process.terminal and no --console-socket, `run` makes the console socket itself
and relays between its own terminal and the container's pty, as runc does.
"""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.runtime.caller import recv_master, relay, wait_forwarding, wants_terminal
from cove.runtime.create import check_preserve_fds, create
from cove.runtime.delete import delete
from cove.runtime.start import start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime import CreateOptions


def run(opts: CreateOptions, detach: bool) -> int:
    check_preserve_fds(opts)  # before our own socketpair takes fd 3
    ours = -1
    if not opts.console_socket and wants_terminal(opts.bundle):
        if detach:
            raise CoveError("run --detach", "a terminal needs --console-socket")
        import _socket

        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        ours, opts.console_fd = a.detach(), b.detach()
    try:
        create(opts, subreaper=not detach)
    finally:
        if opts.console_fd >= 0:
            os.close(opts.console_fd)
            opts.console_fd = -1
    master = -1
    try:
        if ours >= 0:
            master = recv_master(ours)
            ours = -1  # closed by recv_master
        st = start(opts.root, opts.id)
    except BaseException:
        delete(opts.root, opts.id, force=True)
        raise
    if detach:
        return 0
    try:
        if master >= 0:
            relay(master, st.pid)
            return wait_forwarding(st.pid, forward=False)
        return wait_forwarding(st.pid)
    finally:
        if master >= 0:
            os.close(master)
        delete(opts.root, opts.id, force=True)
