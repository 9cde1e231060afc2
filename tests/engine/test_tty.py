"""A person at a terminal: `cove run -it busybox sh` and `cove exec -it` on a real pty
(the prompt, a command and its output, Ctrl-D ending the shell with its last status)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.lib.engine import Cove, cove_terminal, engine_pids
from tests.lib.paths import ROOT, RUNTIME
from tests.lib.terminal import PtySession
from tests.lib.wait import wait_for


def _session(t: PtySession) -> int:
    t.expect(b"# ")  # busybox sh's prompt for root
    t.send(b"echo $((6*7)); tty\r")
    t.expect(b"42\r\n/dev/pts/")
    t.expect(b"# ")  # (typed ahead of the prompt, input would meet a cooked terminal)
    t.send(b"(exit 3)\r")
    t.expect(b"(exit 3)\r\n")
    t.expect(b"# ")
    t.send(b"\x04")  # Ctrl-D: the shell exits with the last status
    return t.wait()


def test_run_it_shell(cove: Cove) -> None:
    cove_cmd = [sys.executable, "-m", "cove.cli.main", "--root", cove.root]
    t = cove_terminal([*cove_cmd, "run", "-it", "--rm", "--network", "none", "busybox", "sh"])
    assert _session(t) == 3
    assert cove("ps", "-a", "-q").stdout == ""
    t = cove_terminal([*cove_cmd, "run", "-it", "--network", "none", "--name", "i",
                       "busybox", "sh"])
    t.expect(b"# ")
    t.send(b"\x04")
    assert t.wait() == 0
    assert "Exited (0)" in cove("ps", "-a").stdout
    cove("rm", "i")


def test_exec_it_shell(cove: Cove) -> None:
    cove("run", "-d", "--name", "box", "--network", "none", "busybox", "sleep", "1000")
    t = cove_terminal([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "exec", "-it",
                       "box", "sh"])
    assert _session(t) == 3
    assert cove("exec", "box", "echo", "still").stdout == "still\n"
    cove("rm", "-f", "box")


def _cmd(cove: Cove) -> list[str]:
    return [sys.executable, "-m", "cove.cli.main", "--root", cove.root]


def test_run_dit_attach_detach_logs(cove: Cove) -> None:
    """`run -dit`: the terminal is the monitor's; `attach`, a command, ctrl-p ctrl-q
    (the container runs on), `logs` (raw, as docker logs a tty), attach again, exit."""
    cove("run", "-dit", "--name", "dit", "--network", "none", "busybox", "sh")
    t = cove_terminal([*_cmd(cove), "attach", "dit"])
    t.send(b"echo hi $((40+2))\r")
    t.expect(b"hi 42\r\n")
    t.send(b"\x10\x11")
    assert t.wait() == 0
    assert cove("inspect", "-f", "{{.State.Status}}", "dit").stdout == "running\n"
    r = subprocess.run([*_cmd(cove), "logs", "dit"], capture_output=True, timeout=30,
                       env={**os.environ, "COVE_RUNTIME": RUNTIME}, cwd=str(ROOT))
    assert b"hi 42\r\n" in r.stdout, r
    line = [json.loads(x) for x in open(os.path.join(
        cove.root, "containers", "dit", "dit-json.log"))][-1]
    assert line["stream"] == "stdout"
    t = cove_terminal([*_cmd(cove), "attach", "dit"])
    t.send(b"exit 3\r")
    assert t.wait() == 3
    assert cove("inspect", "-f", "{{.State.ExitCode}}", "dit").stdout == "3\n"
    # a short run with a terminal, no -i: its output (raw) and its exit code
    r = subprocess.run([*_cmd(cove), "run", "-t", "--rm", "--network", "none", "busybox",
                        "sh", "-c", "echo hi; tty; exit 3"], capture_output=True,
                       timeout=30, env={**os.environ, "COVE_RUNTIME": RUNTIME}, cwd=str(ROOT))
    assert r.returncode == 3 and r.stdout.startswith(b"hi\r\n/dev/pts/"), r
    # create -t, then start -ai: the terminal from its start
    cove("create", "-it", "--name", "cit", "--network", "none", "busybox", "sh")
    t = cove_terminal([*_cmd(cove), "start", "-ai", "cit"])
    t.expect(b"# ")
    t.send(b"exit 6\r")
    assert t.wait() == 6
    cove("rm", "dit", "cit")


TICKS = "i=0; while [ $i -lt 400 ]; do echo tick $i; i=$((i+1)); sleep 0.01; done; exec sh"


def _ticks(cove: Cove, name: str) -> list[int]:
    r = subprocess.run([*_cmd(cove), "logs", name], capture_output=True, timeout=30,
                       env={**os.environ, "COVE_RUNTIME": RUNTIME}, cwd=str(ROOT))
    return [int(x.split()[1]) for x in r.stdout.decode().splitlines()
            if x.startswith("tick ")]


def test_tty_survives_a_killed_monitor(cove: Cove) -> None:
    """SIGKILL of the monitor of a tty container (its keeper stopped meanwhile, so that
    no monitor runs for a second): what the container wrote meanwhile is in its log,
    every line once, in order; the terminal was not hung up (the keeper held its
    master); then the keeper killed, and the monitor again: the same."""
    cove("run", "-dit", "--name", "tk", "--network", "none", "busybox", "sh", "-c", TICKS)
    time.sleep(0.5)
    pids = engine_pids(cove.root)
    os.kill(pids["zygote"], signal.SIGSTOP)
    os.kill(pids["monitor"], signal.SIGKILL)
    time.sleep(1.0)  # the container ticks on, into its terminal
    os.kill(pids["zygote"], signal.SIGCONT)
    wait_for(lambda: engine_pids(cove.root).get("monitor", pids["monitor"]) !=
             pids["monitor"], what="a new monitor")
    os.kill(pids["zygote"], signal.SIGKILL)  # a sibling keeper comes
    wait_for(lambda: engine_pids(cove.root).get("zygote", pids["zygote"]) != pids["zygote"],
             what="a new keeper")
    os.kill(engine_pids(cove.root)["monitor"], signal.SIGKILL)
    wait_for(lambda: _ticks(cove, "tk")[-1:] == [399], what="every tick", timeout=30)
    assert _ticks(cove, "tk") == list(range(400))
    assert cove("inspect", "-f", "{{.State.Status}}", "tk").stdout == "running\n"
    t = cove_terminal([*_cmd(cove), "attach", "tk"])
    t.send(b"echo alive\r")
    t.expect(b"alive\r\n")
    t.send(b"exit 2\r")
    assert t.wait() == 2
    cove("rm", "tk")
