"""The gvisor handler: runsc (ptrace platform) under Cove's lifecycle and CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.lib.bundles import base_config
from tests.lib.handlers import GVISOR_RUNTIME, pgrep, runtime
from tests.lib.host import cgroups_named
from tests.lib.runtime import Env

pytestmark = pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc not installed")


def test_gvisor_run(env: Env) -> None:
    rt = runtime(env, GVISOR_RUNTIME)
    data = env.tmp / "data"
    data.mkdir()
    (data / "in.txt").write_text("from-host\n")
    cfg = base_config(["sh", "-c", "echo foo=$FOO; echo cwd=$(pwd); echo id=$(id -u); "
                                   "echo bind=$(cat /data/in.txt); echo uname=$(uname -r); "
                                   "touch /x 2>/dev/null || echo ro=yes; exit 7"])
    cfg["process"]["env"].append("FOO=bar")
    cfg["process"]["cwd"] = "/tmp"
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["root"]["readonly"] = True
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                          "options": ["rbind", "ro"]})
    b = env.bundle(cfg)
    r = rt("run", "--bundle", str(b.path), env.id("gv"), timeout=60)
    assert r.returncode == 7, r.stderr
    out = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    assert out == {"foo": "bar", "cwd": "/tmp", "id": "1000", "bind": "from-host",
                   "uname": "4.4.0", "ro": "yes"}, r.stdout


def test_gvisor_lifecycle(env: Env) -> None:
    rt = runtime(env, GVISOR_RUNTIME)
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id("gv")
    rt("create", "--bundle", str(b.path), cid, check=True, timeout=60)
    assert rt.status(cid) == "created"
    rt("start", cid, check=True)
    assert rt.status(cid) == "running"
    r = rt("exec", cid, "sh", "-c", "echo hi; exit 3")
    assert r.returncode == 3 and r.stdout == "hi\n", r.stderr
    assert json.loads(rt("ps", "--format", "json", cid, check=True).stdout)
    rt("pause", cid, check=True)
    assert rt.status(cid) == "paused"
    rt("resume", cid, check=True)
    rt("kill", cid, "KILL", check=True)
    rt.wait_status(cid, "stopped", timeout=20)
    rt("delete", cid, check=True)
    assert rt("state", cid).returncode == 1
    assert not pgrep("runsc", str(env.tmp))


def test_gvisor_force_delete(env: Env) -> None:
    rt = runtime(env, GVISOR_RUNTIME)
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id("gv")
    rt("run", "--detach", "--bundle", str(b.path), cid, check=True, timeout=60)
    rt("delete", "--force", cid, check=True)
    assert not pgrep("runsc", str(env.tmp))
    assert not (env.tmp / "state" / cid).exists()


def test_gvisor_host_network_lifecycle(env: Env) -> None:
    """runsc wants create's --network on every later verb: with io.cove.gvisor.network=
    host (in a network namespace of the container's own), create + start + exec + kill
    + delete work and leave nothing (no runsc, no cgroup)."""
    rt = runtime(env, GVISOR_RUNTIME)
    cfg = base_config(["sleep", "1000"])
    cfg["annotations"] = {"io.cove.gvisor.network": "host"}
    b = env.bundle(cfg)
    cid = env.id("gv")
    rt("create", "--bundle", str(b.path), cid, check=True, timeout=60)
    rt("start", cid, check=True)
    assert rt.status(cid) == "running"
    r = rt("exec", cid, "sh", "-c", "echo hi")
    assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
    rt("kill", cid, "KILL", check=True)
    rt.wait_status(cid, "stopped", timeout=20)
    rt("delete", cid, check=True)
    assert not pgrep("runsc", str(env.tmp))
    assert not cgroups_named(cid)
