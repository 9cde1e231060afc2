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

from tests.lib.engine import Cove
from tests.lib.wait import wait_for


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
    _fails(cove, *run, "busybox", "/nonexistent", says='exec: "/nonexistent"')
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


def test_port_in_use(cove: Cove, netns: str) -> None:
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


def test_more_bad_options_leave_nothing(cove: Cove, tmp_path: Path) -> None:
    run = ("run", "--network", "none", "-v", "vol1:/data")
    for p in ("99999:80", "80:0", "80:70000", "-1:80", "300.1.1.1:80:80"):
        _fails(cove, *run, f"--publish={p}", "busybox", "true", says=f"-p {p}: ")
    _fails(cove, *run, "-e", "=x", "busybox", "true", says="-e '=x': ")
    env_file = tmp_path / "env"
    env_file.write_text("A=1\n=oops\n")
    _fails(cove, *run, "--env-file", str(env_file), "busybox", "true", says="'=oops'")
    _fails(cove, *run, "--memory", "1k", "busybox", "true",
           says="--memory 1k: minimum memory limit allowed is 6MB")
    n = len(os.sched_getaffinity(0))
    _fails(cove, *run, "--cpus", str(n + 62), "busybox", "true",
           says=f"range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available")
    _fails(cove, *run, "--cpus", "-1", "busybox", "true", says="range of CPUs")
    _fails(cove, *run, "-v", f"{tmp_path}:/b:zz", "busybox", "true",
           says=f"-v {tmp_path}:/b:zz: unknown volume option 'zz'")
    _fails(cove, *run, "-v", f"{tmp_path}:/b:ro,rw", "busybox", "true", says="ro,rw")
    _fails(cove, *run, "-v", f"{tmp_path}:/b:ro:x", "busybox", "true", says="ro:x")
    for policy in ("always", "on-failure", "unless-stopped"):
        _fails(cove, *run, "--rm", "--restart", policy, "busybox", "true",
               says="conflicting options: --restart and --rm")
        _fails(cove, *run, "-d", "--rm", "--restart", policy, "busybox", "true",
               says="conflicting options: --restart and --rm")
    assert _containers(cove) == [] and _volumes(cove) == []
    _fails(cove, "inspect", "nosuch", says="cove: no such object: nosuch")
    _fails(cove, "inspect", "--type", "container", "nosuch", says="no such container")
    # what is valid still runs: docker's volume options, --restart no with --rm, --cpus N
    (tmp_path / "f").write_text("x")
    r = cove("run", "--rm", "--network", "none", "--restart", "no", "--cpus", str(n),
             "--memory", "6m", "-v", f"{tmp_path}:/b:ro,z", "-v", f"{tmp_path}:/c:Z,rslave",
             "-v", f"{tmp_path}:/d:rw,rprivate",
             "busybox", "sh", "-c", "cat /b/f /c/f; touch /b/g 2>/dev/null || echo ro; "
                                    "touch /d/g && echo rw")
    assert r.stdout == "xxro\nrw\n", r.stderr
    assert _containers(cove) == []


def test_logs_into_a_closed_pipe(cove: Cove) -> None:
    cove("run", "--name", "many", "--network", "none", "busybox", "seq", "1", "20000")
    env = {**os.environ, "COVE_RUNTIME": os.environ.get("COVE_RUNTIME", "")}
    p = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "logs",
                          "many"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b"1\n"
    p.stdout.close()  # as `cove logs many | head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=30) != 0 and err == "", err
    cove("rm", "many")


def test_overlapping_subnets(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    c("network", "create", "--subnet", "10.90.0.0/24", "a")
    _fails(c, "network", "create", "--subnet", "10.90.0.0/16", "b",
           says="--subnet 10.90.0.0/16: overlaps with network a (10.90.0.0/24)")
    _fails(c, "network", "create", "--subnet", "10.90.0.128/25", "b", says="network a")
    # the default network's subnet is taken even before its first use
    _fails(c, "network", "create", "--subnet", "10.88.0.0/16", "b",
           says="overlaps with network bridge (10.88.0.0/24)")
    _fails(c, "network", "create", "--subnet", "10.91.0.1/24", "b", says="host bits set")
    _fails(c, "network", "create", "--subnet", "10.91.0.0/31", "b", says="too small")
    _fails(c, "network", "create", "--subnet", "fd00::/64", "b", says="IPv4")
    # a network without --subnet gets one that overlaps none
    c("network", "create", "--subnet", "10.89.0.0/16", "wide")
    c("network", "create", "auto")
    nets = {n["Name"]: n["Subnet"] for n in
            json.loads(c("network", "ls", "--format", "json").stdout)}
    assert nets["auto"] not in ("10.89.0.0/24", "10.90.0.0/24"), nets
    c("network", "rm", "a", "wide", "auto")
    assert [n["Name"] for n in json.loads(c("network", "ls", "--format", "json").stdout)] \
        == []


def test_publish_without_host_port_picks_a_free_one(cove: Cove, netns: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    c("run", "-d", "--name", "web", "-p", "80", "-p", "127.0.0.1::81", "busybox", "sh",
      "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www")
    lo, hi = (int(x) for x in subprocess.run(
        [*inns, "cat", "/proc/sys/net/ipv4/ip_local_port_range"], capture_output=True,
        text=True).stdout.split())
    rec = json.loads(c("inspect", "web").stdout)[0]
    ports = rec["NetworkSettings"]["Ports"]
    assert rec["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "", "HostPort": ""}]
    (b80,), (b81,) = ports["80/tcp"], ports["81/tcp"]
    assert b80["HostIp"] == "0.0.0.0" and b81["HostIp"] == "127.0.0.1"
    assert lo <= int(b80["HostPort"]) <= hi and lo <= int(b81["HostPort"]) <= hi
    assert b80["HostPort"] != b81["HostPort"]
    out = c("port", "web").stdout
    assert f"80/tcp -> 0.0.0.0:{b80['HostPort']}\n" in out
    assert f"81/tcp -> 127.0.0.1:{b81['HostPort']}\n" in out

    def get(port: str) -> str:
        try:
            return subprocess.run([*inns, "busybox", "wget", "-qO-",
                                   f"http://127.0.0.1:{port}/"],
                                  capture_output=True, text=True, timeout=3).stdout
        except subprocess.TimeoutExpired:
            return ""
    wait_for(lambda: get(b80["HostPort"]) == "hello\n", timeout=10, what="ephemeral port")
    assert get("80") == ""  # not host port 80
    # a second container gets another port
    c("run", "-d", "--name", "web2", "-p", "80", "busybox", "sleep", "100")
    p2 = json.loads(c("inspect", "web2").stdout)[0]["NetworkSettings"]["Ports"]["80/tcp"]
    assert p2[0]["HostPort"] not in (b80["HostPort"], b81["HostPort"])
    c("rm", "-f", "web", "web2")
