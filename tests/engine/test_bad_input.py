"""Bad input to `cove run` and friends: one clear line on stderr, a non-zero status, and
nothing half-made left behind (no container, volume, nft table, mount or process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.engine.conftest import Cove, wait_for
from tests.engine.test_e2e import netns  # noqa: F401  (a fixture)


def _fails(cove: Cove, *args: str, says: str) -> str:
    r = cove(*args, check=False)
    assert r.returncode != 0, f"cove {' '.join(args)} succeeded"
    err = r.stderr
    assert err.startswith("cove: ") and err.count("\n") == 1, f"not one line: {err!r}"
    assert says in err, err
    return err


def _containers(cove: Cove) -> list[str]:
    d = Path(cove.root, "containers")
    return sorted(os.listdir(d)) if d.is_dir() else []


def _volumes(cove: Cove) -> list[str]:
    return [v["Name"] for v in json.loads(cove("volume", "ls", "--format", "json").stdout)]


def test_bad_options_leave_nothing(cove: Cove) -> None:
    run = ("run", "--network", "none", "-v", "vol1:/data")
    _fails(cove, *run, "--restart", "sometimes", "busybox", "true", says="--restart sometimes")
    _fails(cove, *run, "--restart", "on-failure:x", "busybox", "true", says="on-failure:x")
    _fails(cove, *run, "--restart", "always:3", "busybox", "true", says="retry count")
    _fails(cove, *run, "--health-cmd", "true", "--health-interval", "5x", "busybox", "true",
           says="duration '5x'")
    _fails(cove, *run, "--health-cmd", "true", "--health-timeout", "0s", "busybox", "true",
           says="more than 0s")
    _fails(cove, *run, "--log-opt", "max-size=lots", "busybox", "true", says="size 'lots'")
    _fails(cove, *run, "-p", "80:http", "busybox", "true", says="-p 80:http")
    _fails(cove, "run", "--network", "nosuch", "-v", "vol1:/data", "busybox", "true",
           says="network nosuch: no such network")
    _fails(cove, "run", "--network", "none", "-v", "bad!name:/data", "busybox", "true",
           says="volume 'bad!name'")
    # the volume is made (docker's first use), then the start fails: both undone
    _fails(cove, *run, "busybox", "/nonexistent", says="no such executable")
    assert _containers(cove) == [] and _volumes(cove) == []
    _fails(cove, "volume", "rm", "nosuch", says="volume nosuch: no such volume")
    _fails(cove, "volume", "inspect", "nosuch", says="no such volume")
    _fails(cove, "network", "rm", "nosuch", says="network nosuch: no such network")
    _fails(cove, "stop", "nosuch", says="container nosuch: no such container")


def test_name_taken(cove: Cove) -> None:
    cove("run", "-d", "--name", "dup", "--network", "none", "busybox", "sleep", "1000")
    before = json.loads(cove("inspect", "dup").stdout)[0]
    _fails(cove, "run", "-d", "--name", "dup", "--network", "none", "busybox", "true",
           says="container name 'dup': already in use")
    _fails(cove, "run", "--name", "no/slash", "--network", "none", "busybox", "true",
           says="--name")
    after = json.loads(cove("inspect", "dup").stdout)[0]
    assert after["Id"] == before["Id"] and after["State"]["Status"] == "running"
    assert _containers(cove) == ["dup"]
    cove("rm", "-f", "dup")


def test_port_in_use(cove: Cove, netns: str) -> None:  # noqa: F811
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    c("run", "-d", "--name", "one", "-p", "18081:80", "busybox", "sleep", "1000")
    _fails(c, "run", "-d", "--name", "two", "-p", "18081:80", "busybox", "true",
           says="port is already allocated (container one)")
    # a process of the namespace listens on the port
    holder = subprocess.Popen([*inns, sys.executable, "-c",
                               "import socket, time; s = socket.socket(); "
                               "s.bind(('0.0.0.0', 18082)); s.listen(); print(1, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"1\n"
        _fails(c, "run", "-d", "--name", "three", "-p", "18082:80", "busybox", "true",
               says="port is already in use")
        # a stopped container whose port was taken meanwhile does not start
        c("stop", "-t", "0", "one")
        c("run", "-d", "--name", "four", "-p", "18081:80", "busybox", "sleep", "1000")
        _fails(c, "start", "one", says="port is already allocated (container four)")
    finally:
        holder.kill()
        holder.wait()
    assert _containers(c) == ["four", "one"]
    tables = subprocess.run([*inns, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout.split()
    assert len([t for t in tables if t.startswith("cove_c_")]) == 1  # four's only
    c("rm", "-f", "one", "four")


def test_health_check_that_hangs(cove: Cove) -> None:
    cove("run", "-d", "--name", "slow", "--network", "none", "--health-cmd", "sleep 100",
         "--health-timeout", "0.5s", "--health-interval", "0.3s", "--health-retries", "2",
         "busybox", "sh", "-c", "while :; do sleep 1; done")

    def health() -> dict[str, Any]:
        rec: dict[str, Any] = json.loads(cove("inspect", "slow").stdout)[0]
        h: dict[str, Any] = rec["State"]["Health"]
        return h
    wait_for(lambda: health()["Status"] == "unhealthy", timeout=20, what="unhealthy")
    h = health()
    assert h["Log"][-1]["ExitCode"] == -1 and "timed out after 0.5s" in h["Log"][-1]["Output"]
    time.sleep(0.3)
    # the timed-out checks were killed: no `sleep 100` piles up in the container
    cove("supervisor", "stop")
    time.sleep(0.3)
    assert "sleep 100" not in cove("top", "slow").stdout
    cove("rm", "-f", "slow")
