"""`docker exec -it` through a real pty (tests/lib/terminal.py's PtySession drives
/usr/bin/docker):
the prompt, a command, a resize, Ctrl-D, the exit code."""

from __future__ import annotations

import os
import signal
import time

from tests.lib.api import Api


def test_exec_it_through_a_pty(api: Api) -> None:
    api.docker("run", "-d", "--name", "tty1", "busybox", "sleep", "60")
    t = api.terminal("exec", "-it", "tty1", "sh")
    try:
        t.expect(b"# ")
        t.send(b"stty size; echo $((6*7))\r")
        out = t.expect(b"42")
        assert b"30 100" in out
        t.resize(40, 120)
        os.kill(t.pid, signal.SIGWINCH)
        time.sleep(0.5)
        t.send(b"stty size\r")
        t.expect(b"40 120")
        t.send(b"exit 5\r")
        assert t.wait(timeout=60) == 5
    finally:
        t.close()
        api.docker("rm", "-f", "tty1")


def test_exec_it_ctrl_d(api: Api) -> None:
    api.docker("run", "-d", "--name", "tty2", "busybox", "sleep", "60")
    t = api.terminal("exec", "-it", "tty2", "sh")
    try:
        t.expect(b"# ")
        t.send(b"\x04")
        assert t.wait(timeout=60) == 0
    finally:
        t.close()
        api.docker("rm", "-f", "tty2")


def test_run_it_through_a_pty(api: Api) -> None:
    """`docker run -it` (create with Tty, attach before start, start, resize): the
    container's terminal under cove's monitor, its size the client's."""
    t = api.terminal("run", "-it", "--name", "rit", "--network", "none", "busybox", "sh")
    try:
        t.expect(b"# ")
        # the client sets the size after the start, so maybe after the first prompt
        for _ in range(20):
            t.send(b"stty size; echo $((6*7))\r")
            out = t.expect(b"42\r\n")
            if b"30 100" in out:
                break
            time.sleep(0.25)
        assert b"30 100" in out
        t.resize(40, 120)
        os.kill(t.pid, signal.SIGWINCH)
        time.sleep(0.5)
        t.send(b"stty size\r")
        t.expect(b"40 120")
        t.send(b"exit 5\r")
        assert t.wait() == 5
    finally:
        t.close()
    status, _, logs = api.request("GET", "/containers/rit/logs?stdout=1&stderr=1")
    assert status == 200 and b"30 100\r\n42\r\n" in logs, logs  # raw: no frames, \r\n
    assert api.docker("inspect", "-f", "{{.Config.Tty}} {{.State.ExitCode}}",
                      "rit").stdout.split() == ["true", "5"]
    api.docker("rm", "rit")


def test_run_dit_attach_detach(api: Api) -> None:
    """`docker run -dit`, `docker attach`, a command, ctrl-p ctrl-q (the container runs
    on), `logs`, attach again and exit: the exit code."""
    api.docker("run", "-dit", "--name", "dit", "--network", "none", "busybox", "sh")
    t = api.terminal("attach", "dit")
    try:
        time.sleep(0.3)
        t.send(b"echo hi $((40+2))\r")
        t.expect(b"hi 42\r\n")
        t.send(b"\x10\x11")
        t.wait()
    finally:
        t.close()
    assert api.docker("inspect", "-f", "{{.State.Status}}", "dit").stdout.strip() == \
        "running"
    assert "hi 42\n" in api.docker("logs", "dit").stdout
    t = api.terminal("attach", "dit")
    try:
        time.sleep(0.3)
        t.send(b"exit 3\r")
        assert t.wait() == 3
    finally:
        t.close()
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
