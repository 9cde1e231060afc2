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


def _exit(pid: int, fd: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if select.select([fd], [], [], 0.1)[0]:
            try:
                os.read(fd, 4096)
            except OSError:
                pass
        assert time.monotonic() < deadline, "the docker client did not exit"


def test_run_it_through_a_pty(api: Api) -> None:
    """`docker run -it` (create with Tty, attach before start, start, resize): the
    container's terminal under cove's monitor, its size the client's."""
    pid, fd = _spawn(api, "run", "-it", "--name", "rit", "--network", "none", "busybox",
                     "sh")
    try:
        _read_until(fd, b"# ")
        # the client sets the size after the start, so maybe after the first prompt
        for _ in range(20):
            os.write(fd, b"stty size; echo $((6*7))\r")
            out = _read_until(fd, b"42\r\n")
            if b"30 100" in out:
                break
            time.sleep(0.25)
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
        assert _exit(pid, fd) == 5
    finally:
        os.close(fd)
    status, _, logs = api.request("GET", "/containers/rit/logs?stdout=1&stderr=1")
    assert status == 200 and b"30 100\r\n42\r\n" in logs, logs  # raw: no frames, \r\n
    assert api.docker("inspect", "-f", "{{.Config.Tty}} {{.State.ExitCode}}",
                      "rit").stdout.split() == ["true", "5"]
    api.docker("rm", "rit")


def test_run_dit_attach_detach(api: Api) -> None:
    """`docker run -dit`, `docker attach`, a command, ctrl-p ctrl-q (the container runs
    on), `logs`, attach again and exit: the exit code."""
    api.docker("run", "-dit", "--name", "dit", "--network", "none", "busybox", "sh")
    pid, fd = _spawn(api, "attach", "dit")
    try:
        time.sleep(0.3)
        os.write(fd, b"echo hi $((40+2))\r")
        _read_until(fd, b"hi 42\r\n")
        os.write(fd, b"\x10\x11")
        _exit(pid, fd)
    finally:
        os.close(fd)
    assert api.docker("inspect", "-f", "{{.State.Status}}", "dit").stdout.strip() == \
        "running"
    assert "hi 42\n" in api.docker("logs", "dit").stdout
    pid, fd = _spawn(api, "attach", "dit")
    try:
        time.sleep(0.3)
        os.write(fd, b"exit 3\r")
        assert _exit(pid, fd) == 3
    finally:
        os.close(fd)
    api.docker("rm", "dit")


def test_run_t_without_stdin_and_bad_input(api: Api) -> None:
    """`docker run -t` with no -i and no terminal of its own: the container's terminal
    output, raw; bad terminal requests are Docker-shaped errors."""
    r = api.docker("run", "-t", "--rm", "--network", "none", "busybox", "sh", "-c",
                   "echo hi; tty; exit 4", check=False)
    assert r.returncode == 4 and r.stdout.startswith("hi\n/dev/pts/"), r
    api.docker("run", "-dt", "--name", "badtty", "--network", "none", "busybox", "sh")
    try:
        status, _, doc = api.request("POST", "/containers/badtty/resize?h=0&w=80")
        assert status == 400 and "size" in doc["message"], doc
        status, _, doc = api.request("POST", "/containers/badtty/attach?stream=1&stdout=1"
                                     "&detachKeys=ctrl-%3F")
        assert status == 400 and "detach key" in doc["message"], doc
        status, _, doc = api.request("POST", "/containers/nosuch/resize?h=10&w=80")
        assert status == 404, doc
    finally:
        api.docker("rm", "-f", "badtty")
