"""A person at a terminal: `cove run -it busybox sh` and `cove exec -it` on a real pty
(the prompt, a command and its output, Ctrl-D ending the shell with its last status)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

from tests.engine.conftest import ROOT, RUNTIME, Cove


class Terminal:
    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "COVE_RUNTIME": RUNTIME, "TERM": "xterm"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                os.chdir(str(ROOT))
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.out = b""
        self.seen = 0  # where the next expect starts looking

    def expect(self, token: bytes, timeout: float = 20) -> None:
        """Wait for `token` in what came after the last one expected."""
        deadline = time.monotonic() + timeout
        while token not in self.out[self.seen:]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {token!r} on the terminal; got {self.out!r}"
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed before {token!r}; got {self.out!r}"
                self.out += chunk
        self.seen = self.out.index(token, self.seen) + len(token)

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while True:
            got, status = os.waitpid(self.pid, os.WNOHANG)
            if got == self.pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"did not exit; got {self.out!r}")


def _session(t: Terminal) -> int:
    t.expect(b"# ")  # busybox sh's prompt for root
    t.type(b"echo $((6*7)); tty\r")
    t.expect(b"42\r\n/dev/pts/")
    t.expect(b"# ")  # (typed ahead of the prompt, input would meet a cooked terminal)
    t.type(b"(exit 3)\r")
    t.expect(b"(exit 3)\r\n")
    t.expect(b"# ")
    t.type(b"\x04")  # Ctrl-D: the shell exits with the last status
    return t.exit_code()


def test_run_it_shell(cove: Cove) -> None:
    cove_cmd = [sys.executable, "-m", "cove.cli.main", "--root", cove.root]
    t = Terminal([*cove_cmd, "run", "-it", "--rm", "--network", "none", "busybox", "sh"])
    assert _session(t) == 3
    assert cove("ps", "-a", "-q").stdout == ""
    t = Terminal([*cove_cmd, "run", "-it", "--network", "none", "--name", "i",
                  "busybox", "sh"])
    t.expect(b"# ")
    t.type(b"\x04")
    assert t.exit_code() == 0
    assert "Exited (0)" in cove("ps", "-a").stdout
    cove("rm", "i")


def test_exec_it_shell(cove: Cove) -> None:
    cove("run", "-d", "--name", "box", "--network", "none", "busybox", "sleep", "1000")
    t = Terminal([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "exec", "-it",
                  "box", "sh"])
    assert _session(t) == 3
    assert cove("exec", "box", "echo", "still").stdout == "still\n"
    cove("rm", "-f", "box")
