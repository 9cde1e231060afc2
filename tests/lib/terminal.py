"""A real terminal for the tests: a command on a fresh pty as a person at a shell runs
it (`PtySession`: peers' `run -it`, `cove run -it`, `docker exec -it`), or the master
side of a pty that came some other way (`PtyMaster`: over a --console-socket)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time


class PtyMaster:
    """The master side of a pty: what came (`buf`, all of it), a cursor past the last
    token expected, and input typed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.seen = 0  # where the next `expect` starts looking

    def expect(self, token: bytes, timeout: float = 20) -> bytes:
        """Read until `token` shows up after the last one expected (AssertionError if
        the pty closes or `timeout` passes first); what came since that last one, up to
        and including `token`."""
        deadline = time.monotonic() + timeout
        while token not in self.buf[self.seen:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {token!r} on the pty; got {self.buf!r}")
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: every slave fd is closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"pty closed before {token!r}; got {self.buf!r}")
                self.buf += chunk
        start = self.seen
        self.seen = self.buf.index(token, start) + len(token)
        return self.buf[start:self.seen]

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size (the kernel signals SIGWINCH to the pty's foreground
        process group)."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        """Close the master (once: `PtySession.wait` closes it too)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def drain(self, wait: float = 0.1) -> None:
        """Keep what is there within `wait` seconds (so the other side never blocks on
        a full pty)."""
        if select.select([self.fd], [], [], wait)[0]:
            try:
                self.buf += os.read(self.fd, 4096)
            except OSError:
                pass


class PtySession(PtyMaster):
    """A command on a fresh pty, as a terminal user would run it: its own session, the
    pty its controlling terminal."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 cwd: str | None = None, size: tuple[int, int] | None = None) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                if cwd is not None:
                    os.chdir(cwd)
                if env is not None:
                    os.execvpe(argv[0], argv, env)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        super().__init__(fd)
        self.pid = pid
        if size is not None:
            self.resize(*size)

    def wait(self, timeout: float = 30) -> int:
        """The command's exit code (draining the pty meanwhile); SIGKILL and an
        AssertionError if it has not exited within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got, status = os.waitpid(self.pid, os.WNOHANG)
            if got == self.pid:
                break
            self.drain()
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"pty command did not exit; got {self.buf!r}")
        self.close()
        return os.waitstatus_to_exitcode(status)
