"""End to end through the `cove` command: published ports on the loopback (in a network
namespace the test makes), restart policies with growing backoff, a health check that
turns unhealthy and restarts its container, and SIGKILL of the supervisor and the
monitors while containers run (their logs and exit codes survive)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from cove.engine.state import parse_rfc3339, pid_alive
from tests.lib.engine import Cove, engine_pids, kill_engine
from tests.lib.wait import wait_for

TICKS = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"


def _inspect(cove: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(cove("inspect", name).stdout)[0]
    return rec


def test_published_port_answers_on_loopback(cove: Cove, netns: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    c("run", "-d", "--name", "web", "-p", "18080:80", "busybox", "sh", "-c",
      "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www")

    def get(host: str) -> str:
        try:  # (busybox wget -T crashes: a subprocess timeout instead)
            return subprocess.run([*inns, "busybox", "wget", "-qO-", f"http://{host}:18080/"],
                                  capture_output=True, text=True, timeout=3).stdout
        except subprocess.TimeoutExpired:
            return ""
    wait_for(lambda: get("127.0.0.1") == "hello\n", timeout=10, what="127.0.0.1:18080")
    gw = _inspect(c, "web")["NetworkSettings"]["Gateway"]
    assert get(gw) == "hello\n"
    c("rm", "-f", "web")
    wait_for(lambda: get("127.0.0.1") == "", timeout=5, what="port unpublished")
    tables = subprocess.run([*inns, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout
    assert "cove_c_" not in tables  # the container's DNAT table went with it


def test_restart_on_failure_backs_off(cove: Cove) -> None:
    cove("run", "-d", "--name", "crash", "--network", "none", "--restart", "on-failure:3",
         "busybox", "sh", "-c", "echo run; exit 3")
    wait_for(lambda: _inspect(cove, "crash")["RestartCount"] == 3
             and _inspect(cove, "crash")["State"]["Status"] == "exited", timeout=30,
             what="3 restarts")
    time.sleep(2)  # a fourth would be due within 1.6 s
    rec = _inspect(cove, "crash")
    assert rec["RestartCount"] == 3 and rec["State"]["Status"] == "exited"
    assert rec["State"]["ExitCode"] == 3
    assert cove("logs", "crash").stdout == "run\n" * 4
    log = rec["RestartLog"]
    assert len(log) == 3
    gaps = [parse_rfc3339(e["RestartedAt"]) - parse_rfc3339(e["ExitedAt"]) for e in log]
    assert [e["Delay"] for e in log] == [0.1, 0.2, 0.4]
    assert gaps[0] < gaps[1] < gaps[2], f"delays do not grow: {gaps}"
    for g, e in zip(gaps, log, strict=True):
        assert e["Delay"] <= g < e["Delay"] + 0.3
    cove("rm", "crash")
    cove("supervisor", "stop")


def test_restart_always_brings_back_a_killed_app(cove: Cove) -> None:
    cove("run", "-d", "--name", "svc", "--network", "none", "--restart", "always",
         "busybox", "sleep", "1000")
    pid = _inspect(cove, "svc")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _inspect(cove, "svc")["State"]["Status"] == "running"
             and _inspect(cove, "svc")["State"]["Pid"] not in (0, pid), what="back")
    rec = _inspect(cove, "svc")
    assert rec["RestartCount"] == 1 and rec["RestartLog"][0]["ExitCode"] == 137
    cove("stop", "-t", "0", "svc")  # a manual stop is final
    time.sleep(0.5)
    assert _inspect(cove, "svc")["State"]["Status"] == "exited"
    cove("rm", "svc")
    cove("supervisor", "stop")


def test_unhealthy_container_is_restarted(cove: Cove) -> None:
    cove("run", "-d", "--name", "doc", "--network", "none", "--health-cmd", "test -e /tmp/ok",
         "--health-interval", "0.2s", "--health-retries", "2", "--health-on-failure",
         "restart", "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 1000")
    wait_for(lambda: _inspect(cove, "doc")["State"]["Health"]["Status"] == "healthy",
             what="healthy")
    started = _inspect(cove, "doc")["State"]["StartedAt"]
    cove("exec", "doc", "rm", "/tmp/ok")  # the check starts failing
    wait_for(lambda: _inspect(cove, "doc")["State"]["Health"]["Status"] == "unhealthy",
             timeout=5, what="unhealthy")
    assert "(unhealthy)" in cove("ps").stdout
    wait_for(lambda: _inspect(cove, "doc")["State"]["StartedAt"] != started, timeout=20,
             what="restart")
    wait_for(lambda: _inspect(cove, "doc")["State"]["Health"]["Status"] == "healthy",
             what="healthy again")
    cove("rm", "-f", "doc")
    cove("supervisor", "stop")


def test_sigkill_monitor_and_keeper_at_once(cove: Cove) -> None:
    """Both engine processes SIGKILLed at the same moment: the containers run on, their
    output waits in the FIFOs; the next command revives the monitor, which adopts them,
    and no line or exit code is lost."""
    cove("run", "-d", "--name", "a", "--network", "none", "busybox", "sh", "-c",
         f"trap 'echo bye; exit 7' TERM; {TICKS}")
    cove("run", "-d", "--name", "b", "--network", "none", "busybox", "sh", "-c",
         "i=0; while [ ! -e /tmp/quit ]; do i=$((i+1)); echo tick $i; sleep 0.05; done; "
         "echo quit; exit 5")
    recs = {n: _inspect(cove, n) for n in ("a", "b")}
    old = kill_engine(cove.root)
    time.sleep(1.0)  # both write on into their FIFOs, nobody reads
    assert not engine_pids(cove.root)
    assert all(os.path.exists(f"/proc/{r['State']['Pid']}") for r in recs.values())
    assert "a" in cove("ps").stdout  # revives the monitor, which adopts both
    wait_for(lambda: _inspect(cove, "a")["MonitorPid"] not in (0, old["monitor"]),
             what="re-adoption")
    assert _inspect(cove, "a")["State"]["Pid"] == recs["a"]["State"]["Pid"]
    cove("exec", "b", "touch", "/tmp/quit")
    assert cove("wait", "b").stdout.strip() == "5"
    out = cove("logs", "b").stdout.splitlines()
    assert out[-1] == "quit"
    assert [int(x.split()[1]) for x in out[:-1]] == list(range(1, len(out)))
    cove("stop", "-t", "5", "a")
    assert cove("wait", "a").stdout.strip() == "7"
    rec = _inspect(cove, "a")
    assert (rec["State"]["ExitCode"], rec["State"]["Error"]) == (7, "")
    out = cove("logs", "a").stdout.splitlines()
    assert out[-1] == "bye"
    ticks = [int(x.split()[1]) for x in out[:-1]]
    assert ticks == list(range(1, len(ticks) + 1)) and len(ticks) > 20, "lines lost"
    cove("rm", "a", "b")
    cove("supervisor", "stop")


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def test_one_monitor_under_a_keeper_which_may_die(cove: Cove) -> None:
    """One monitor watches every container of a root; it is the child of the root's
    keeper. SIGKILL of the keeper costs the running containers nothing: the monitor
    starts a new keeper, the next `run` uses the same monitor, and `supervisor stop`
    ends both (cove/engine/monitor.py, zygote.py)."""
    cove("run", "-d", "--name", "a", "--network", "none", "busybox", "sh", "-c",
         f"trap 'exit 3' TERM; {TICKS}")
    zpid = int(Path(cove.root, "zygote.pid").read_text())
    with open(f"/proc/{zpid}/comm") as f:
        assert f.read().strip() == "cove-zygote"
    mon = _inspect(cove, "a")["MonitorPid"]
    assert _ppid(mon) == zpid
    os.kill(zpid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(zpid), what="the keeper's death")
    wait_for(lambda: Path(cove.root, "zygote.pid").read_text().strip() != str(zpid),
             what="a new keeper")
    z2 = int(Path(cove.root, "zygote.pid").read_text())
    assert pid_alive(z2)
    n = len(cove("logs", "a").stdout.splitlines())
    time.sleep(0.5)
    assert len(cove("logs", "a").stdout.splitlines()) > n, "the log stopped"
    cove("run", "-d", "--name", "b", "--network", "none", "busybox", "sleep", "100")
    assert _inspect(cove, "b")["MonitorPid"] == mon
    cove("stop", "-t", "5", "a")
    assert cove("wait", "a").stdout.strip() == "3"
    cove("rm", "-f", "a", "b")
    cove("supervisor", "stop")
    assert not pid_alive(z2) and not pid_alive(mon)
