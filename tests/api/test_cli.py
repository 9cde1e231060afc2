"""The docker CLI (Debian's 20.10, /usr/bin/docker) against `cove serve`: negotiation,
run (attached, --rm, -d), ps, logs -f, exec, stop, rm, inspect, top, stats, cp,
networks by name, volumes, a published port, events."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.lib.api import DOCKER, Api


def test_ping_and_version_are_negotiated(api: Api) -> None:
    for method in ("HEAD", "GET"):
        status, headers, body = api.request(method, "/_ping")
        assert status == 200 and headers["api-version"] == "1.41"
        assert body == (b"OK" if method == "GET" else None)
    status, headers, body = api.request("GET", "/v1.41/version")
    assert status == 200 and body["ApiVersion"] == "1.41" and headers["api-version"] == "1.41"
    status, _, body = api.request("GET", "/v1.30/info")   # an older client: same answers
    assert status == 200 and body["OSType"] == "linux"
    assert api.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.41"


def test_run_attached_and_removed(api: Api) -> None:
    r = api.docker("run", "--rm", "busybox", "echo", "hi")
    assert r.stdout == "hi\n"
    r = api.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                   check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert api.docker("ps", "-aq").stdout == ""


def test_detached_ps_logs_exec_stop_rm(api: Api) -> None:
    cid = api.docker("run", "-d", "--name", "web1", "-l", "app=t", "-e", "X=1", "busybox",
                     "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done; "
                     "sleep 30").stdout.strip()
    assert len(cid) == 64
    ps = api.docker("ps", "--filter", "label=app=t", "--format", "{{.Names}} {{.State}}")
    assert ps.stdout == "web1 running\n"
    r = api.docker("exec", "-e", "Y=2", "web1", "sh", "-c", "echo $X$Y; exit 4", check=False)
    assert (r.returncode, r.stdout) == (4, "12\n")
    assert api.docker("exec", "web1", "nosuch", check=False).returncode in (126, 127)
    top = api.docker("top", "web1").stdout
    assert "sleep" in top or "sh" in top
    stats = api.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "web1")
    assert stats.stdout.startswith("web1 ")
    doc = json.loads(api.docker("inspect", "web1").stdout)[0]
    assert doc["Name"] == "/web1" and doc["State"]["Running"] and doc["Config"]["Tty"] is False
    assert doc["Config"]["Labels"]["app"] == "t" and "X=1" in doc["Config"]["Env"]
    api.docker("stop", "-t", "1", "web1")
    assert api.docker("inspect", "-f", "{{.State.Status}}", "web1").stdout == "exited\n"
    logs = api.docker("logs", "-f", "web1", timeout=20)
    assert logs.stdout == "line1\nline2\nline3\n"
    api.docker("rm", "web1")
    r = api.docker("inspect", "web1", check=False)
    assert r.returncode != 0 and "No such" in r.stderr


def test_logs_follow_ends_with_the_container(api: Api) -> None:
    api.docker("run", "-d", "--name", "f1", "busybox", "sh", "-c",
               "for i in 1 2 3; do echo n$i; sleep 0.3; done")
    t = time.monotonic()
    r = api.docker("logs", "-f", "--timestamps", "f1", timeout=20)
    assert [ln.split(" ", 1)[1] for ln in r.stdout.splitlines()] == ["n1", "n2", "n3"]
    assert time.monotonic() - t < 10
    assert api.docker("logs", "--tail", "1", "f1").stdout == "n3\n"
    api.docker("rm", "f1")


def test_name_conflict_and_missing(api: Api) -> None:
    api.docker("create", "--name", "c1", "busybox", "true")
    r = api.docker("create", "--name", "c1", "busybox", "true", check=False)
    assert r.returncode != 0 and "already in use" in r.stderr
    r = api.docker("start", "nosuchcontainer", check=False)
    assert r.returncode != 0 and "No such container" in r.stderr
    api.docker("rm", "c1")


def test_cp_both_ways(api: Api, tmp_path: Path) -> None:
    api.docker("run", "-d", "--name", "cp1", "busybox", "sleep", "30")
    src = tmp_path / "in.txt"
    src.write_text("hello cp\n")
    api.docker("cp", str(src), "cp1:/tmp/")
    assert api.docker("exec", "cp1", "cat", "/tmp/in.txt").stdout == "hello cp\n"
    api.docker("exec", "cp1", "sh", "-c", "mkdir -p /d/e && echo x > /d/e/f")
    api.docker("cp", "cp1:/d", str(tmp_path / "out"))
    assert (tmp_path / "out" / "e" / "f").read_text() == "x\n"
    api.docker("rm", "-f", "cp1")


def test_network_by_name_volume_and_published_port(api: Api) -> None:
    api.docker("network", "create", "--subnet", "10.131.0.0/24", "appnet")
    assert "appnet" in api.docker("network", "ls", "--format", "{{.Name}}").stdout
    api.docker("volume", "create", "data")
    api.docker("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    api.docker("run", "-d", "--name", "srv", "--network", "appnet", "-v", "data:/www",
               "-p", "18080:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/www")
    r = api.docker("run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-",
                   "http://srv/f")
    assert r.stdout == "kept\n"
    got = ""
    for _ in range(50):   # the published port, from the server's namespace
        got = api.in_ns("busybox", "wget", "-qO-", "http://127.0.0.1:18080/f").stdout
        if got:
            break
        time.sleep(0.1)
    assert got == "kept\n"
    net = json.loads(api.docker("network", "inspect", "appnet").stdout)[0]
    assert net["IPAM"]["Config"][0]["Subnet"] == "10.131.0.0/24" and net["Containers"]
    r = api.docker("volume", "rm", "data", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    api.docker("rm", "-f", "srv")
    api.docker("network", "rm", "appnet")
    api.docker("volume", "rm", "data")


def test_events_while_a_container_runs(api: Api) -> None:
    p = subprocess.Popen([DOCKER, "events", "--format", "{{.Type}} {{.Action}}",
                          "--filter", "type=container"], env=api.env,
                         stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        api.docker("run", "--rm", "busybox", "true")
        seen: list[str] = []
        assert p.stdout is not None
        deadline = time.monotonic() + 10
        while "container destroy" not in seen and time.monotonic() < deadline:
            seen.append(p.stdout.readline().strip())
        assert "container create" in seen and "container start" in seen
        assert "container die" in seen
    finally:
        p.kill()
        p.wait()


def test_push_pull_local_registry(api: Api, tmp_path: Path) -> None:
    import shutil

    import pytest
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (scripts/install-deps.sh)")
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                   "http:\n  addr: 127.0.0.1:5077\n")
    reg = subprocess.Popen(["nsenter", f"--net={api.netns}", "docker-registry", "serve",
                            str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if api.in_ns("busybox", "wget", "-qO-", "http://127.0.0.1:5077/v2/").returncode == 0:
                break
            time.sleep(0.1)
        api.docker("tag", "busybox", "localhost:5077/bb:1")
        out = api.docker("push", "localhost:5077/bb:1").stdout
        assert "digest: sha256:" in out
        api.docker("rmi", "localhost:5077/bb:1")
        assert "localhost:5077/bb" not in api.docker("images").stdout
        out = api.docker("pull", "localhost:5077/bb:1").stdout
        assert "Digest: sha256:" in out
        assert "localhost:5077/bb" in api.docker("images").stdout
        api.docker("rmi", "localhost:5077/bb:1")
        r = api.docker("pull", "localhost:5077/nosuch:1", check=False)
        assert r.returncode != 0
    finally:
        reg.terminate()
        reg.wait(10)


def test_stdin_health_and_the_engine_sees_it(api: Api) -> None:
    import sys

    from tests.lib.paths import ROOT, RUNTIME
    r = api.docker("run", "-i", "--rm", "busybox", "wc", "-l", input="a\nb\nc\n")
    assert r.stdout.strip() == "3"
    api.docker("run", "-d", "--name", "hc", "--health-cmd", "true", "--health-interval",
               "1s", "busybox", "sleep", "30")
    doc = json.loads(api.docker("inspect", "hc").stdout)[0]
    assert doc["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    # a container made through the API is the engine's: `cove ps` lists it
    import os
    ps = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", api.root, "ps",
                         "--format", "{{.Names}}"], capture_output=True, text=True,
                        cwd=str(ROOT), env={**os.environ, "COVE_RUNTIME": RUNTIME})
    assert "hc" in ps.stdout.split()
    api.docker("rm", "-f", "hc")
