"""/dev/console bound to the container's log, for a container without a terminal whose
spec carries the annotation `io.cove.console=log` (the engine sets it for `--systemd`).

systemd as pid 1 writes its boot status and its own log to /dev/console, and only to a
terminal there (its open_terminal() refuses anything isatty() says no to: a bound FIFO
stays silent). So the console is a pty of the container's devpts whose slave is bound on
/dev/console, and whose master a small relay copies to the container's stdout: the pipe
the engine's monitor copies into the log, so the lines land in `cove logs` as podman's
do under conmon. The relay is forked just before execve, after the process took its
user, capabilities and no_new_privs (a process of the container like any other: what
the container's pid 1 can do, it can't do more of); it holds a slave itself (a pty
master with no slave open reads EIO at once, a busy loop) and ends with the pid
namespace, or on systemd's final SIGTERM, or when its stdout's reader is gone.
"""

from __future__ import annotations

import os
import termios  # imported with this module, before pivot_root

from cove.errors import CoveError, os_why
from cove.runtime.process import _bind_console


def make() -> int:
    """A pty whose slave is bound on /dev/console (raw output: systemd's "\\n" stays
    one, not "\\r\\n"); returns the master, close-on-exec."""
    try:
        master, slave = os.openpty()
    except OSError as e:
        raise CoveError("/dev/console", f"a pty for the log console: {os_why(e)}") from None
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # oflag: no "\n" -> "\r\n"
        attrs[3] &= ~termios.ECHO  # lflag
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        _bind_console(slave)
    finally:
        os.close(slave)
    os.set_inheritable(master, False)
    return master


def relay(master: int) -> None:
    """Fork the relay: the master's bytes to our stdout until it is killed. The parent
    (the container's pid 1, about to exec) closes the master."""
    pid = os.fork()
    if pid:
        os.close(master)
        return
    try:
        import _signal
        for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGPIPE):
            _signal.signal(sig, _signal.SIG_DFL)
        os.setsid()  # not in pid 1's session: systemd's own console handling is its own
        keep = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        lo, hi = sorted((master, keep))
        os.closerange(3, lo)
        os.closerange(lo + 1, hi)
        os.closerange(hi + 1, 65536)
        fd0 = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        os.dup2(fd0, 0, inheritable=False)
        os.dup2(fd0, 2, inheritable=False)
        os.close(fd0)
        carry = b""
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:
                break
            if not b:
                break
            # systemd ends a line with "\r\n" on a terminal (for one in raw mode): the
            # log wants "\n" (a lone "\r" at a read's end waits for the next read)
            b = (carry + b).replace(b"\r\n", b"\n")
            carry = b"\r" if b.endswith(b"\r") else b""
            b = b[:-1] if carry else b
            while b:
                b = b[os.write(1, b):]
    finally:
        os._exit(0)
