"""`docker exec -it` through a real pty (python's pty module drives /usr/bin/docker):
the prompt, a command, a resize, Ctrl-D, the exit code."""

from __future__ import annotations

import os
import pty
import select
import struct
import time

from tests.api.conftest import DOCKER, Api


def _read_until(fd: int, want: bytes, timeout: float = 15) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while want not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    assert want in buf, f"waited for {want!r}, got {buf!r}"
    return buf


def _spawn(api: Api, *args: str) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:   # the child: docker on the pty
        os.execve(DOCKER, [DOCKER, *args], api.env)
    import fcntl
    import termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    return pid, fd


def test_exec_it_through_a_pty(api: Api) -> None:
    api.docker("run", "-d", "--name", "tty1", "busybox", "sleep", "60")
    pid, fd = _spawn(api, "exec", "-it", "tty1", "sh")
    try:
        _read_until(fd, b"# ")
        os.write(fd, b"stty size; echo $((6*7))\r")
        out = _read_until(fd, b"42")
        assert b"30 100" in out
        import fcntl
        import signal
        import termios
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        time.sleep(0.5)
        os.write(fd, b"stty size\r")
        _read_until(fd, b"40 120")
        os.write(fd, b"exit 5\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(fd)
        api.docker("rm", "-f", "tty1")


def test_exec_it_ctrl_d(api: Api) -> None:
    api.docker("run", "-d", "--name", "tty2", "busybox", "sleep", "60")
    pid, fd = _spawn(api, "exec", "-it", "tty2", "sh")
    try:
        _read_until(fd, b"# ")
        os.write(fd, b"\x04")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
        api.docker("rm", "-f", "tty2")
