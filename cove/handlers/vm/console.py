"""Terminals for the vm handler (process.terminal, `exec -t`).

The host makes a pty: its master goes to the engine over --console-socket (SCM_RIGHTS,
with the slave's name, as runc sends its own); its slave, in raw mode, is held by the
monitor (or an exec's relay), which carries the bytes to the guest and back as frames.
In the guest the process runs on a pty of the guest's own (the guest's cove-runtime makes
it), so echo, ^C, ^D and job control are the guest's line discipline; the host pty is a
transparent pipe that also carries the window size: the holder of the slave makes it its
controlling terminal, so a TIOCSWINSZ on the master by the engine signals SIGWINCH to it,
and it sends the new size to the guest (RESIZE), which sets it on the guest's pty.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Any

from cove.errors import CoveError, os_why

TIOCSCTTY = 0x540E
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414


def console_size(proc: dict[str, Any] | None) -> tuple[int, int] | None:
    """(rows, cols) from process.consoleSize, or None."""
    cs = (proc or {}).get("consoleSize")
    if isinstance(cs, dict) and cs.get("height") and cs.get("width"):
        return int(cs["height"]), int(cs["width"])
    return None


def open_pty(size: tuple[int, int] | None) -> tuple[int, int]:
    """(master, slave): the slave in raw mode (a pipe for bytes), sized as asked."""
    import tty

    master, slave = os.openpty()  # both close-on-exec
    try:
        tty.setraw(slave)
        if size is not None:
            set_winsize(slave, *size)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def winsize(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on fd; (0, 0) when unknown."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, TIOCGWINSZ, bytes(8)))
    except OSError:
        return 0, 0
    return rows, cols


def take_ctty(slave: int) -> None:
    """Make `slave` our controlling terminal (we must be a session leader): resizes of
    the master then reach us as SIGWINCH, a hang-up as SIGHUP."""
    try:
        fcntl.ioctl(slave, TIOCSCTTY, 0)
    except OSError:
        pass  # still relays; resizes after the first are not passed on


def send_master(sock_fd: int, master: int, slave: int, what: str = "--console-socket") -> None:
    """Send the pty master over a connected console socket (closes sock_fd)."""
    import socket

    s = socket.socket(fileno=sock_fd)
    try:
        s.sendmsg([os.ttyname(slave).encode()],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, master.to_bytes(4, "little"))])
    except OSError as e:
        raise CoveError(what, f"sending the terminal: {os_why(e)}") from None
    finally:
        s.close()


def connect(path: str) -> int:
    from cove.runtime.caller import connect_console

    return connect_console(path)
