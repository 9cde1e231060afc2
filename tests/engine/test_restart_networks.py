"""Restarts, health actions and adoption on the networks a user gets: none, the default
bridge and a user network, each inside a network namespace the test makes.

Every earlier restart test used `--network none`, and so missed that the supervisor
(started `python -I -S`) could not import pyroute2: on the default network every restart
failed while `RestartCount` still counted it. These run the same scenarios on each
network; the processes the engine starts must find every module they need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lib.engine import Cove, kill_engine
from tests.lib.wait import wait_for

NETWORKS = ["none", "default", "user"]


def _net(c: Cove, which: str) -> list[str]:
    """`--network` flags for `which`; a user network is made first."""
    if which == "user":
        c("network", "create", "app")
        return ["--network", "app"]
    return [] if which == "default" else ["--network", "none"]


def _inspect(c: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(c("inspect", name).stdout)[0]
    return rec


def _links(inns: list[str]) -> str:
    return subprocess.run([*inns, "ip", "-o", "link"], capture_output=True,
                          text=True).stdout


def _done(c: Cove, which: str) -> None:
    c("supervisor", "stop")
    if which == "user":
        c("network", "rm", "app")


@pytest.mark.parametrize("which", NETWORKS)
def test_on_failure_runs_the_app_exactly_three_times(cove: Cove, netns: str,
                                                      which: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    net = _net(c, which)
    c("run", "-d", "--name", "crash", *net, "--restart", "on-failure:2", "busybox", "sh",
      "-c", "echo start; sleep 0.3; exit 3")
    wait_for(lambda: _inspect(c, "crash")["RestartCount"] == 2
             and _inspect(c, "crash")["State"]["Status"] == "exited", timeout=30,
             what="2 restarts")
    time.sleep(1.5)  # a third restart would be due within 0.8 s
    rec = _inspect(c, "crash")
    assert rec["RestartCount"] == 2 and rec["State"]["ExitCode"] == 3
    assert rec["State"]["Error"] == ""
    assert c("logs", "crash").stdout == "start\n" * 3  # ran exactly 3 times
    assert [e.get("Error") for e in rec["RestartLog"]] == [None, None]
    log = (Path(cove.root) / "zygote.log").read_text()
    assert "restart failed" not in log and "No module named" not in log, log
    # the last run's network went with its exit: only lo and the bridge remain
    links = _links(inns)
    assert " veth" not in links and "@" not in links, links
    c("rm", "crash")
    _done(c, which)


@pytest.mark.parametrize("which", ["default", "user"])
def test_always_brings_back_a_killed_app_and_its_port(cove: Cove, netns: str,
                                                      which: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    net = _net(c, which)
    c("run", "-d", "--name", "web", *net, "-p", "18081:80", "--restart", "always",
      "busybox", "sh", "-c",
      "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www")

    def get() -> str:
        try:
            return subprocess.run([*inns, "busybox", "wget", "-qO-",
                                   "http://127.0.0.1:18081/"],
                                  capture_output=True, text=True, timeout=3).stdout
        except subprocess.TimeoutExpired:
            return ""
    wait_for(lambda: get() != "", timeout=10, what="the port answers")
    pid = _inspect(c, "web")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _inspect(c, "web")["State"]["Status"] == "running"
             and _inspect(c, "web")["State"]["Pid"] not in (0, pid), what="back")
    wait_for(lambda: get() != "", timeout=10, what="the port answers again")
    rec = _inspect(c, "web")
    assert rec["RestartCount"] == 1 and rec["RestartLog"][0]["ExitCode"] == 137
    assert rec["State"]["Error"] == ""
    c("rm", "-f", "web")
    wait_for(lambda: get() == "", timeout=5, what="port unpublished")
    _done(c, which)


@pytest.mark.parametrize("which", NETWORKS)
def test_unhealthy_container_is_restarted(cove: Cove, netns: str, which: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    net = _net(c, which)
    c("run", "-d", "--name", "doc", *net, "--health-cmd", "test -e /tmp/ok",
      "--health-interval", "0.2s", "--health-retries", "2", "--health-on-failure",
      "restart", "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 1000")
    wait_for(lambda: _inspect(c, "doc")["State"]["Health"]["Status"] == "healthy",
             what="healthy")
    started = _inspect(c, "doc")["State"]["StartedAt"]
    c("exec", "doc", "rm", "/tmp/ok")
    wait_for(lambda: _inspect(c, "doc")["State"]["StartedAt"] != started, timeout=20,
             what="restart")
    wait_for(lambda: _inspect(c, "doc")["State"]["Health"]["Status"] == "healthy",
             what="healthy again")
    if which != "none":
        assert _inspect(c, "doc")["NetworkSettings"]["IPAddress"]
        assert c("exec", "doc", "ip", "-o", "-4", "addr").stdout.count("inet ") == 2
    c("rm", "-f", "doc")
    _done(c, which)


@pytest.mark.parametrize("which", ["default", "user"])
def test_adoption_on_a_bridge_network(cove: Cove, netns: str, which: str) -> None:
    """A container whose monitor was killed is adopted by the next monitor (its keeper
    starts it); when it then exits, that monitor tears its network down."""
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    net = _net(c, which)
    c("run", "-d", "--name", "a", *net, "--restart", "on-failure:1", "busybox", "sh", "-c",
      "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done")
    mon = _inspect(c, "a")["MonitorPid"]
    os.kill(mon, signal.SIGKILL)
    wait_for(lambda: _inspect(c, "a")["MonitorPid"] not in (0, mon), timeout=15,
             what="adopted")
    c("stop", "a")
    assert _inspect(c, "a")["State"]["ExitCode"] == 0
    assert "@" not in _links(inns)  # its veth went
    assert "No module named" not in (Path(cove.root) / "zygote.log").read_text()
    c("rm", "a")
    _done(c, which)


def test_failed_restart_is_recorded_not_counted(cove: Cove, netns: str) -> None:
    """A restart that can't run (its image's layers deleted) shows the error in inspect
    and ps, is not counted, leaves nothing half-made, and is retried with backoff."""
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    ctl = Path(cove.root) / "ctl"
    ctl.mkdir()
    # the app exits only once told to (a file in a bind mount), so the layers are gone
    # before its first restart however slow this machine is
    c("run", "-d", "--name", "gone", "--restart", "always", "-v", f"{ctl}:/ctl",
      "busybox", "sh", "-c", "while [ ! -e /ctl/go ]; do sleep 0.05; done; exit 5")
    snaps = Path(cove.root) / "snapshots"
    moved = Path(cove.root) / "snapshots.away"
    pid = _inspect(c, "gone")["State"]["Pid"]
    os.rename(snaps, moved)  # the rootfs stays mounted; the next mount fails
    (ctl / "go").touch()
    try:
        wait_for(lambda: "restart failed" in _inspect(c, "gone")["State"]["Error"],
                 timeout=15, what="the failure recorded")
        rec = _inspect(c, "gone")
        assert rec["RestartCount"] == 0, rec["RestartLog"]
        assert rec["State"]["Status"] in ("exited", "restarting")
        assert rec["RestartLog"][-1]["Error"].startswith("restart failed")
        ps = c("ps", "-a").stdout
        assert "restart failed" in ps, ps
        assert pid != 0 and not os.path.exists(f"/proc/{pid}")
        time.sleep(1.0)
        tries = len(_inspect(c, "gone")["RestartLog"])
        assert 2 <= tries <= 6, tries  # retried, with a growing delay
        assert "@" not in _links(inns)  # no veth of a half-made start
    finally:
        os.rename(moved, snaps)
    wait_for(lambda: _inspect(c, "gone")["RestartCount"] >= 1, timeout=75,
             what="a restart once the layers are back")
    assert _inspect(c, "gone")["State"]["Error"] == ""
    c("rm", "-f", "gone")
    _done(c, "default")


def test_engine_processes_import_what_the_engine_needs(tmp_path: Path) -> None:
    """The `python -I -S` command line the engine uses for its own processes finds every
    engine module and its third-party libraries, whichever way the parent was started:
    through the fast launcher (no site) and through `python -m` (with site)."""
    prog = ("import sys; from cove.engine import spawn; import subprocess; "
            "argv = spawn.argv('probe'); "
            "r = subprocess.run(argv[:4] + ['import sys; sys.path[0:0] = "
            "sys.argv.pop(1).split(\":\"); import pyroute2, zstandard; "
            "import cove.engine.containers, cove.engine.network, cove.engine.monitor, "
            "cove.engine.policy, cove.engine.zygote, cove.image.store; print(\"ok\")'] "
            "+ argv[5:]); sys.exit(r.returncode)")
    root = Path(__file__).resolve().parents[2]
    venv = root / ".venv" / "bin" / "python"
    # -m style: site on, cwd the checkout
    r = subprocess.run([str(venv), "-c", prog], cwd=str(root), capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    # the fast launcher's way: -I -S with the venv's site-packages put on sys.path
    launcher = (root / ".venv" / "bin" / "cove").read_text().splitlines()
    paths = next(line for line in launcher if line.startswith("sys.path[0:0]"))
    r = subprocess.run([str(venv), "-I", "-S", "-c", f"import sys; {paths}; {prog}"],
                       cwd=str(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert sys.executable  # the same interpreter runs the children


def test_a_killed_monitor_is_brought_back_by_the_next_ps(cove: Cove) -> None:
    """Restart policies must not stop without a word when the monitor and its keeper
    are killed: the next `ps` (or `inspect`) that sees a container relying on them
    starts them and says so."""
    cove("run", "-d", "--name", "svc", "--network", "none", "--restart", "always",
         "busybox", "sleep", "1000")
    kill_engine(cove.root)
    r = cove("ps")
    assert "monitor was not running" in r.stderr and "svc" in r.stdout
    assert "monitor was not running" not in cove("ps").stderr  # once
    pid = json.loads(cove("inspect", "svc").stdout)[0]["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: json.loads(cove("inspect", "svc").stdout)[0]["RestartCount"] == 1,
             what="restarted by the revived monitor")
    cove("rm", "-f", "svc")
    cove("supervisor", "stop")


def test_a_monitor_in_another_network_namespace_is_refused(cove: Cove, netns: str) -> None:
    """A monitor started from the host (a `--network none` container) restarts what it
    watches in its own namespace: a container on a network started from a private
    namespace would have its restarts wired on the host (bridge, nft table, forwarding:
    seen by hand). So its start is refused, in one line, leaving nothing; containers
    without a network still start from there."""
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    cove("run", "-d", "--network", "none", "--name", "keep", "busybox", "sleep", "60")
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                text=True).stdout
    for argv in (["run", "--rm"], ["run", "-d", "--name", "r1", "--restart", "always"]):
        r = c(*argv, "busybox", "true", check=False)
        assert r.returncode == 125, r
        assert r.stderr.count("\n") == 1 and "runs in another network namespace" in \
            r.stderr and "supervisor stop" in r.stderr, r.stderr
    assert c("ps", "-a", "--format", "{{.Names}}").stdout == "keep\n"
    assert c("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
    assert subprocess.run(["ip", "-o", "link"], capture_output=True,
                          text=True).stdout == host_links
    assert "cove0" not in _links(inns)
    cove("rm", "-f", "keep")
    cove("supervisor", "stop")
    # with the monitor gone, the private namespace's own runs work
    assert c("run", "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    c("supervisor", "stop")
