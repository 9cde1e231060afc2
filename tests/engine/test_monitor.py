"""The root's one monitor and its keeper under SIGKILL (cove/engine/monitor.py,
zygote.py): 20 containers write a line every 10 ms while the monitor, the keeper, and
both in turn are killed; some containers exit by themselves in between. Afterwards every
line is in each log, in order, and `wait` gives each exit code."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cove.engine.state import pid_alive
from tests.lib.engine import Cove
from tests.lib.wait import wait_for

N = 20


def _pid(cove: Cove, what: str) -> int:
    try:
        return int(Path(cove.root, f"{what}.pid").read_text())
    except (OSError, ValueError):
        return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(cove: Cove, what: str, comm: str, not_: int = 0) -> int:
    pid = _pid(cove, what)
    return pid if pid != not_ and pid_alive(pid) and _comm(pid) == comm else 0


def _inspect(cove: Cove, *names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(cove("inspect", *names).stdout)
    return out


def _kill(cove: Cove, what: str, comm: str) -> int:
    pid = _alive(cove, what, comm)
    assert pid, f"no {comm} runs"
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
def test_sigkill_monitor_keeper_and_both_in_turn(cove: Cove) -> None:
    # c00-c09 exit by themselves after a number of lines (spread over the test, so that
    # some exit while a monitor or keeper is being replaced); c10-c19 when stopped
    names = [f"c{i:02d}" for i in range(N)]
    for i, n in enumerate(names):
        limit = 550 + 40 * i if i < 10 else 10**9
        cove("run", "-d", "--name", n, "--network", "none", "busybox", "sh", "-c",
             f"trap 'echo end; exit {100 + i}' TERM; i=0; while [ $i -lt {limit} ]; do "
             f"i=$((i+1)); echo line $i; sleep 0.01; done; echo end; exit {i + 1}")
    monitor = _alive(cove, "monitor", "cove-monitor")
    assert monitor and {r["MonitorPid"] for r in _inspect(cove, *names)
                        if r["State"]["Running"]} == {monitor}, \
        "one monitor watches every container"
    time.sleep(0.3)

    # the monitor: the keeper reaps the inits that exit meanwhile and starts a new one
    old = _kill(cove, "monitor", "cove-monitor")
    wait_for(lambda: _alive(cove, "monitor", "cove-monitor", not_=old), what="new monitor")
    time.sleep(0.5)

    # the keeper: the monitor starts a new one (a sibling)
    old = _kill(cove, "zygote", "cove-zygote")
    wait_for(lambda: _alive(cove, "zygote", "cove-zygote", not_=old), what="new keeper")
    time.sleep(0.5)

    # both in turn: the monitor again (the new keeper is no parent of the inits: their
    # exit statuses come through its pidfds), then the keeper again
    old = _kill(cove, "monitor", "cove-monitor")
    wait_for(lambda: _alive(cove, "monitor", "cove-monitor", not_=old), what="new monitor")
    time.sleep(0.5)
    old = _kill(cove, "zygote", "cove-zygote")
    wait_for(lambda: _alive(cove, "zygote", "cove-zygote", not_=old), what="new keeper")
    time.sleep(0.3)

    cove("stop", "-t", "10", *names[10:], timeout=120)
    for i, n in enumerate(names):
        want = i + 1 if i < 10 else 100 + i
        assert cove("wait", n).stdout.strip() == str(want), n
    for r in _inspect(cove, *names):
        assert r["State"]["Error"] == "", (r["Name"], r["State"]["Error"])
    for n in names:
        out = cove("logs", n).stdout.splitlines()
        assert out and out[-1] == "end", (n, out[-3:])
        seq = [int(x.split()[1]) for x in out[:-1]]
        assert seq == list(range(1, len(seq) + 1)), f"{n}: lines lost or out of order"
        assert len(seq) > 50, n
    cove("rm", *names)
    cove("supervisor", "stop")


def test_monitor_that_cannot_start(cove: Cove) -> None:
    """A monitor that can't start (its socket path is taken by a directory): one line,
    the container left created, not half started."""
    cove("create", "--name", "x", "--network", "none", "busybox", "true")
    os.mkdir(os.path.join(cove.root, "monitor.sock"))
    os.chmod(cove.root, 0o755)
    r = cove("start", "x", check=False)
    os.rmdir(os.path.join(cove.root, "monitor.sock"))
    assert r.returncode != 0
    assert r.stderr.startswith("cove: monitor: cannot start") and \
        len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _inspect(cove, "x")[0]["State"]["Status"] in ("created", "exited")
    cove("rm", "x")
    cove("supervisor", "stop")


def test_runtime_in_process_and_as_a_binary_agree(cove: Cove,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor's steps run cove-runtime's create/start/delete in-process (forked,
    cove/engine/steps.py) unless told to exec the binary: both give the same output,
    exit codes, errors and cleanup."""
    from cove.engine import steps
    assert steps.in_process({"COVE_RUNTIME": str(Path(__file__).resolve().parents[2] /
                                                  ".venv/bin/cove-runtime")})
    assert not steps.in_process({"COVE_RUNTIME": "/usr/sbin/runc"})
    assert not steps.in_process({"COVE_RUNTIME_EXEC": "1"})
    seen = []
    for mode in ("in-process", "binary"):
        if mode == "binary":
            monkeypatch.setenv("COVE_RUNTIME_EXEC", "1")
        ok = cove("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                  "echo out; echo err >&2; exit 3", check=False)
        bad = cove("run", "--rm", "--network", "none", "busybox", "/nonexistent",
                   check=False)
        cove("run", "-d", "--name", "d", "--network", "none", "busybox", "sh", "-c",
             "trap 'exit 9' TERM; while :; do sleep 0.1; done")
        cove("stop", "d")
        code = cove("wait", "d").stdout.strip()
        cove("rm", "d")
        seen.append((ok.returncode, ok.stdout, ok.stderr, bad.returncode,
                     bad.stderr.split(": ", 2)[-1], code))
    assert seen[0] == seen[1] == [(3, "out\n", "err\n", 127, seen[0][4], "9")][0], seen
    assert "no such file or directory" in seen[0][4]
    assert not os.listdir(os.path.join(cove.root, "runtime")) or \
        os.listdir(os.path.join(cove.root, "runtime")) == ["seccomp-cache"]
    cove("supervisor", "stop")
