"""`cove run` attached to the user: a foreground `run -it` that `ps`, `inspect` and the
supervisor leave alone, `-i` forwarding stdin (and `-it` refusing a stdin that is not a
terminal), and Ctrl-C reaching the container (proxied without -t, a byte on the
terminal with -t). Issue 20, points 1 to 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cove.engine import state
from tests.lib.engine import Cove, cove_terminal
from tests.lib.paths import ROOT, RUNTIME
from tests.lib.wait import wait_for

TRAP_INT = ("n=0; trap 'n=$((n+1)); echo got INT $n; [ $n = 2 ] && exit 7' INT; "
            "echo ready; while :; do sleep 0.1; done")


def _cove_cmd(cove: Cove) -> list[str]:
    return [sys.executable, "-m", "cove.cli.main", "--root", cove.root]


def _state(cove: Cove, name: str) -> dict[str, object]:
    st: dict[str, object] = json.loads(cove("inspect", name).stdout)[0]["State"]
    return st


# -- 1: a foreground run -it is watched ---------------------------------------------------

def test_ps_and_inspect_leave_run_it_alone(cove: Cove) -> None:
    """`cove ps` in another terminal used to find no monitor for a `run -it` container,
    record it as lost (255) and delete its runtime state under the running session."""
    cove("supervisor", "start")  # it looks at every running record, every 0.2 s
    t = cove_terminal([*_cove_cmd(cove), "run", "-it", "--name", "fg", "--network", "none",
                       "busybox", "sh"])
    t.expect(b"# ")
    for _ in range(3):
        assert "fg" in cove("ps").stdout
        st = _state(cove, "fg")
        assert st["Status"] == "running", st
    t.send(b"echo still $((40+2))\r")
    t.expect(b"still 42\r\n")
    t.expect(b"# ")
    t.send(b"exit 5\r")
    assert t.wait() == 5
    st = _state(cove, "fg")
    assert (st["Status"], st["ExitCode"], st["Error"]) == ("exited", 5, ""), st
    assert b"warning" not in t.buf, t.buf
    cove("rm", "fg")


def test_run_it_killed_client(cove: Cove) -> None:
    """A `run -it` runs under the monitor: its client SIGKILLed, the container runs on
    (as docker's), `cove attach` takes its terminal over, and its exit is recorded."""
    t = cove_terminal([*_cove_cmd(cove), "run", "-it", "--name", "gone", "--network", "none",
                       "busybox", "sh"])
    t.expect(b"# ")
    rec = state.load(os.path.join(cove.root, "containers", "gone"))
    assert rec is not None and rec["MonitorPid"]
    os.kill(t.pid, signal.SIGKILL)
    assert t.wait() == -signal.SIGKILL
    assert _state(cove, "gone")["Status"] == "running"
    t = cove_terminal([*_cove_cmd(cove), "attach", "gone"])
    t.send(b"echo back $((40+2))\r")
    t.expect(b"back 42\r\n")
    t.send(b"exit 4\r")
    assert t.wait() == 4
    st = _state(cove, "gone")
    assert (st["Status"], st["ExitCode"], st["Error"]) == ("exited", 4, ""), st
    cove("rm", "gone")


def test_records_are_replaced_atomically(tmp_path: Path) -> None:
    """A reader never sees a record half-written or missing while it is rewritten."""
    cdir = str(tmp_path)
    state.save(cdir, {"Name": "x", "State": {}, "Pad": "y" * 200_000, "N": 0})
    stop = threading.Event()
    bad: list[object] = []

    def reader() -> None:
        while not stop.is_set():
            rec = state.load(cdir)
            if rec is None or len(rec["Pad"]) != 200_000:
                bad.append(rec)

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(300):
            state.update(cdir, lambda r, i=i: r.update(N=i))  # type: ignore[misc]
    finally:
        stop.set()
        th.join()
    assert not bad
    assert [f for f in os.listdir(cdir) if ".tmp" in f] == []


# -- 2: stdin -----------------------------------------------------------------------------

def test_run_i_forwards_stdin(cove: Cove) -> None:
    r = cove("run", "-i", "--rm", "--network", "none", "busybox", "wc", "-l",
             input="a\nb\n")
    assert r.stdout.strip() == "2", r
    big = "".join(f"line {i}\n" for i in range(50_000))  # more than a pipe holds
    r = cove("run", "-i", "--name", "cat", "--network", "none", "busybox", "cat",
             input=big)
    assert r.stdout == big and r.returncode == 0
    assert len(cove("logs", "cat").stdout) == len(big)
    assert not os.path.exists(os.path.join(cove.root, "containers", "cat", "stdin.fifo"))
    cove("rm", "cat")
    # an empty stdin: EOF at once
    r = cove("run", "-i", "--rm", "--network", "none", "busybox", "cat", input="")
    assert r.stdout == ""
    # without -i, as docker: stdin is /dev/null
    r = cove("run", "--rm", "--network", "none", "busybox", "wc", "-l", input="a\nb\n")
    assert r.stdout.strip() == "0"
    assert cove("ps", "-a", "-q").stdout == ""


def test_run_i_from_a_terminal(cove: Cove) -> None:
    """`cove run -i IMAGE cat` typed at: each line goes through, ^D ends it."""
    t = cove_terminal([*_cove_cmd(cove), "run", "-i", "--rm", "--network", "none", "busybox",
                       "cat"])
    t.send(b"hello\n")
    t.expect(b"hello\r\nhello\r\n")  # the terminal's echo, then cat's
    t.send(b"\x04")
    assert t.wait() == 0
    assert cove("ps", "-a", "-q").stdout == ""


def test_reader_leaving_ends_the_run(cove: Cove) -> None:
    """`cove run IMAGE yes | head -2`: once head has gone, the container ends as the
    program would in a pipeline, and --rm removes it (it ran on, filling its log)."""
    cmd = " ".join([*_cove_cmd(cove), "run", "--rm", "--network", "none", "busybox", "yes"])
    r = subprocess.run(["bash", "-c", f"{cmd} | head -2; echo ${{PIPESTATUS[0]}} >&2"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COVE_RUNTIME": RUNTIME}, cwd=str(ROOT))
    assert r.stdout == "y\ny\n" and r.stderr == "141\n", r
    assert cove("ps", "-a", "-q").stdout == ""


def test_run_it_needs_a_terminal(cove: Cove) -> None:
    r = cove("run", "-it", "--rm", "--network", "none", "busybox", "cat", input="hi\n",
             check=False, timeout=30)
    assert r.returncode == 1, r
    assert r.stderr == "cove: run -it: the input device is not a TTY\n", r.stderr
    assert r.stdout == ""
    assert cove("ps", "-a", "-q").stdout == ""


# -- 3: signals ---------------------------------------------------------------------------

def test_ctrl_c_is_proxied_without_tty(cove: Cove) -> None:
    """^C on the terminal of an attached `cove run` (no -t) is the container's SIGINT,
    every time; the run returns the container's exit code and --rm removes it."""
    t = cove_terminal([*_cove_cmd(cove), "run", "--rm", "--network", "none", "busybox", "sh",
                       "-c", TRAP_INT])
    t.expect(b"ready")
    t.send(b"\x03")
    t.expect(b"got INT 1")
    t.send(b"\x03")
    t.expect(b"got INT 2")
    assert t.wait() == 7
    assert b"Traceback" not in t.buf
    assert cove("ps", "-a", "-q").stdout == ""


def test_sigterm_is_proxied_without_tty(cove: Cove) -> None:
    t = cove_terminal([*_cove_cmd(cove), "run", "--name", "term", "--network", "none", "busybox",
                       "sh", "-c", "trap 'echo got TERM; exit 9' TERM; echo ready; "
                       "while :; do sleep 0.1; done"])
    t.expect(b"ready")
    os.kill(t.pid, signal.SIGTERM)
    t.expect(b"got TERM")
    assert t.wait() == 9
    st = _state(cove, "term")
    assert (st["Status"], st["ExitCode"]) == ("exited", 9), st
    cove("rm", "term")


def test_ctrl_c_with_tty_reaches_the_shell(cove: Cove) -> None:
    """With -t the terminal is raw: ^C is a byte the container's terminal turns into
    SIGINT for its foreground job."""
    t = cove_terminal([*_cove_cmd(cove), "run", "-it", "--rm", "--network", "none", "busybox",
                       "sh", "-c", TRAP_INT])
    t.expect(b"ready")
    t.send(b"\x03")
    t.expect(b"got INT 1")
    t.send(b"\x03")
    t.expect(b"got INT 2")
    assert t.wait() == 7
    assert cove("ps", "-a", "-q").stdout == ""
    # and in an interactive shell, ^C ends the foreground command, not the shell
    t = cove_terminal([*_cove_cmd(cove), "run", "-it", "--rm", "--name", "sh", "--network",
                       "none", "busybox", "sh"])
    t.expect(b"# ")
    t.send(b"sleep 100\r")
    t.expect(b"sleep 100\r\n")
    # (a ^C typed before ash has run the command is lost in its line editor, as anywhere)
    wait_for(lambda: "sleep 100" in cove("top", "sh").stdout, what="sleep running")
    t.send(b"\x03")
    t.expect(b"# ")
    t.send(b"echo $?\r")
    t.expect(b"130\r\n")
    t.send(b"exit\r")
    assert t.wait() == 0  # echo's status
    assert cove("ps", "-a", "-q").stdout == ""
