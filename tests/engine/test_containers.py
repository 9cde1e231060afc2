"""Detached, named containers: lifecycle verbs, json-file logs, exec/top/stats, and the
monitor/supervisor surviving SIGKILL."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.lib.engine import Cove, engine_pids, kill_engine
from tests.lib.wait import wait_for

LOOP = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"


def _inspect(cove: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(cove("inspect", name).stdout)[0]
    return rec


def test_lifecycle_logs_exec(cove: Cove) -> None:
    script = ("echo out; echo err >&2; trap 'echo bye; exit 3' TERM; "
              "while :; do sleep 0.1; done")
    cid = cove("run", "-d", "--name", "web", "--network", "none", "-e", "A=1",
               "busybox", "sh", "-c", script).stdout.strip()
    assert len(cid) == 64
    ps = json.loads(cove("ps", "--format", "json").stdout)
    assert [(p["Names"], p["State"]) for p in ps] == [(["web"], "running")]
    wait_for(lambda: "err" in cove("logs", "web").stderr, what="logs")
    r = cove("logs", "web")
    assert r.stdout == "out\n" and r.stderr == "err\n"
    log = os.path.join(cove.root, "containers", "web", "web-json.log")
    entries = [json.loads(x) for x in open(log)]
    assert {(e["log"], e["stream"]) for e in entries} == {("out\n", "stdout"),
                                                          ("err\n", "stderr")}
    assert all(e["time"].endswith("Z") for e in entries)
    assert cove("logs", "-t", "--tail", "1", "web").stdout.count("Z out\n") <= 1
    assert cove("exec", "-e", "B=2", "web", "sh", "-c", "echo $A$B").stdout == "12\n"
    assert cove("exec", "web", "sh", "-c", "exit 5", check=False).returncode == 5
    assert "sleep" in cove("top", "web").stdout
    st = json.loads(cove("stats", "--no-stream", "--format", "json", "web").stdout)
    assert not st["MemUsage"].startswith("0B") and int(st["PIDs"]) >= 1
    assert cove("stop", "-t", "5", "web").returncode == 0
    info = _inspect(cove, "web")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 3
    assert "bye" in cove("logs", "web").stdout
    cove("start", "web")
    assert _inspect(cove, "web")["State"]["Status"] == "running"
    cove("restart", "-t", "1", "web")
    cove("kill", "web")
    assert cove("wait", "web").stdout.strip() == "137"
    assert "Exited (137)" in cove("ps", "-a").stdout
    assert cove("rm", "web").stdout.strip() == "web"
    assert os.listdir(os.path.join(cove.root, "containers")) == []


def test_foreground_run_and_rm(cove: Cove) -> None:
    r = cove("run", "--rm", "--network", "none", "busybox", "sh", "-c",
             "echo hi; echo oops >&2; exit 4", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "hi\n", "oops\n")
    assert cove("ps", "-a", "-q").stdout == ""
    cove("run", "-d", "--rm", "--name", "gone", "--network", "none", "busybox", "true")
    wait_for(lambda: cove("ps", "-a", "-q").stdout == "", what="--rm -d removal")


def test_monitor_and_keeper_sigkill(cove: Cove) -> None:
    """The monitor and its keeper killed together: `supervisor start` brings the monitor
    back, which adopts the running container (no line lost) and keeps its restart
    policy; killed alone, the keeper starts a new monitor at once."""
    cove("run", "-d", "--name", "tick", "--network", "none", "--restart", "always",
         "busybox", "sh", "-c", LOOP)
    info = _inspect(cove, "tick")
    pid, monitor = info["State"]["Pid"], info["MonitorPid"]
    kill_engine(cove.root)
    n0 = len(cove("logs", "tick").stdout.splitlines())
    # the container runs on, its output waits in the FIFO
    wait_for(lambda: os.path.exists(f"/proc/{pid}"), what="container alive")
    cove("supervisor", "start")
    wait_for(lambda: _inspect(cove, "tick")["MonitorPid"] not in (0, monitor),
             what="re-adoption")
    wait_for(lambda: len(cove("logs", "tick").stdout.splitlines()) > n0 + 20, what="logs")
    assert _inspect(cove, "tick")["State"]["Pid"] == pid
    ticks = [int(x.split()[1]) for x in cove("logs", "tick").stdout.splitlines()]
    assert ticks == list(range(1, len(ticks) + 1)), "lines lost or reordered"
    # the monitor alone: its keeper starts another; the init killed from outside is
    # recorded and the policy restarts it
    monitor = engine_pids(cove.root)["monitor"]
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: engine_pids(cove.root).get("monitor") not in (None, monitor),
             what="a new monitor")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _inspect(cove, "tick")["RestartCount"] >= 1
             and _inspect(cove, "tick")["State"]["Status"] == "running", what="restart")
    cove("rm", "-f", "tick")
    cove("supervisor", "stop")


def test_restart_on_failure_and_health(cove: Cove) -> None:
    cove("run", "-d", "--name", "flaky", "--network", "none", "--restart", "on-failure:2",
         "busybox", "sh", "-c", "echo run; exit 1")
    wait_for(lambda: _inspect(cove, "flaky")["RestartCount"] == 2
             and _inspect(cove, "flaky")["State"]["Status"] == "exited", what="retries")
    assert cove("logs", "flaky").stdout == "run\n" * 3
    assert _inspect(cove, "flaky")["State"]["ExitCode"] == 1
    cove("run", "-d", "--name", "doc", "--network", "none", "--health-cmd",
         "test -e /tmp/ok", "--health-interval", "0.2s", "--health-retries", "2",
         "busybox", "sleep", "60")
    wait_for(lambda: _inspect(cove, "doc")["State"]["Health"]["Status"] == "unhealthy",
             what="unhealthy")
    assert "(unhealthy)" in cove("ps").stdout
    cove("exec", "doc", "touch", "/tmp/ok")
    wait_for(lambda: _inspect(cove, "doc")["State"]["Health"]["Status"] == "healthy",
             what="healthy")
    cove("run", "-d", "--name", "killme", "--network", "none", "--health-cmd", "false",
         "--health-interval", "0.2s", "--health-retries", "1", "--health-on-failure", "kill",
         "busybox", "sleep", "60")
    wait_for(lambda: _inspect(cove, "killme")["State"]["Status"] == "exited",
             what="health kill")
    for n in ("flaky", "doc", "killme"):
        cove("rm", "-f", n)
    cove("supervisor", "stop")


def test_log_rotation_and_options(cove: Cove, tmp_path: Path) -> None:
    cove("run", "--network", "none", "--name", "chatty", "--log-opt", "max-size=2k",
         "--log-opt", "max-file=3", "busybox", "sh", "-c",
         "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; done")
    d = os.path.join(cove.root, "containers", "chatty")
    logs = sorted(f for f in os.listdir(d) if "json.log" in f)
    assert logs == ["chatty-json.log", "chatty-json.log.1", "chatty-json.log.2"]
    assert all(os.path.getsize(os.path.join(d, f)) <= 2048 for f in logs)
    out = cove("logs", "chatty").stdout.splitlines()
    assert out[-1] == "line 300" and len(out) < 300
    assert cove("logs", "--tail", "2", "chatty").stdout == "line 299\nline 300\n"
    assert cove("logs", "--since", "1h", "chatty").stdout.splitlines() == out
    cove("rm", "chatty")
    r = cove("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/scratch",
             "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "-u", "1000",
             "-w", "/scratch", "busybox", "sh", "-c",
             "touch /x 2>/dev/null || echo ro; touch f && echo tmp; id -u; pwd")
    assert r.stdout == "ro\ntmp\n1000\n/scratch\n"
    r = cove("run", "--rm", "--network", "none", "--cap-drop", "ALL", "busybox", "sh", "-c",
             "grep CapEff /proc/self/status")
    assert r.stdout.split()[-1] == "0000000000000000"
