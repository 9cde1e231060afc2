"""The vm handler: each container in its own qemu micro-VM (TCG on this host: slow)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from cove.handlers.vm import qemu
from tests.lib.bundles import base_config
from tests.lib.handlers import VM_RUNTIME, no_qemu_left, runtime
from tests.lib.runtime import Env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))]

SCRIPT = r"""
echo "uname=$(uname -r)"
echo "host=$(hostname)"
echo "foo=$FOO"
echo "cwd=$(pwd)"
echo "id=$(id -u):$(id -g)"
echo "bind=$(cat /data/in.txt)"
echo out > /data/out.txt && echo "wrote=ok"
echo "nprocs=$(ls -d /proc/[0-9]* | wc -l)"
grep -q "@TMP@" /proc/mounts && echo "sees-host-mount=yes"
echo err >&2
exit 7
"""


def test_vm_run_isolation(env: Env) -> None:
    """One boot: echo and exit code, env, cwd, user, hostname, a bind mount, isolation."""
    rt = runtime(env, VM_RUNTIME)
    data = env.tmp / "data"
    data.mkdir()
    data.chmod(0o777)
    (data / "in.txt").write_text("from-host\n")
    cfg = base_config(["sh", "-c", SCRIPT.replace("@TMP@", str(env.tmp))])
    cfg["process"]["env"].append("FOO=bar")
    cfg["process"]["cwd"] = "/tmp"
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["hostname"] = "vmbox"
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                          "options": ["rbind", "rw"]})
    b = env.bundle(cfg)
    cid = env.id("vm")
    t0 = time.monotonic()
    r = rt("run", "--bundle", str(b.path), cid, timeout=180)
    wall = time.monotonic() - t0
    out = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    assert r.returncode == 7, (r.stdout, r.stderr)
    assert out["uname"] != os.uname().release or True  # same kernel package: see below
    assert out["host"] == "vmbox"
    assert out["foo"] == "bar"
    assert out["cwd"] == "/tmp"
    assert out["id"] == "1000:1000"
    assert out["bind"] == "from-host"
    assert out["wrote"] == "ok" and (data / "out.txt").read_text() == "out\n"
    assert int(out["nprocs"]) < 10, "the guest sees only its own processes"
    assert "sees-host-mount" not in out
    assert "err" in r.stderr
    # The guest runs Debian's kernel, not the host's (this host's is a custom build).
    assert out["uname"] != os.uname().release
    print(f"vm run wall {wall:.1f}s")
    assert not no_qemu_left()


def _hook(out: str) -> dict[str, Any]:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}


def test_vm_lifecycle(env: Env) -> None:
    """create/state/start/exec/ps/pause/resume/update/kill/delete on one VM, read-only
    rootfs; the hooks: prestart, createRuntime, poststart and poststop on the host,
    createContainer and startContainer in the guest."""
    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["sh", "-c", "trap 'echo got-term; exit 42' TERM; "
                                   "while :; do sleep 0.2; done"])
    cfg["root"]["readonly"] = True
    hooks = env.tmp / "hooks"
    hooks.mkdir()
    cfg["hooks"] = {k: [_hook(f"{hooks}/{k}.json")]
                    for k in ("prestart", "createRuntime", "poststart", "poststop")}
    # In the guest: createContainer before pivot_root (the container's /dev/shm is
    # under its rootfs there), startContainer in the container.
    cfg["hooks"]["createContainer"] = [_hook("/run/cove/rootfs/dev/shm/cc.json")]
    cfg["hooks"]["startContainer"] = [_hook("/dev/shm/sc.json")]
    b = env.bundle(cfg)
    cid = env.id("vm")
    pidfile = env.tmp / "pid"
    t0 = time.monotonic()
    rt("create", "--bundle", str(b.path), "--pid-file", str(pidfile), cid, timeout=180,
       check=True)
    print(f"vm create {time.monotonic() - t0:.1f}s")
    st = rt.state(cid)
    assert st["status"] == "created"
    assert int(pidfile.read_text()) == st["pid"]
    for k in ("prestart", "createRuntime"):
        hs = json.loads((hooks / f"{k}.json").read_text())
        assert hs["status"] == "created" and hs["pid"] == st["pid"], hs
        assert hs["bundle"] == str(b.path) and hs["id"] == cid
    assert not (hooks / "poststart.json").exists()
    rt("start", cid, check=True)
    assert rt.status(cid) == "running"
    assert json.loads((hooks / "poststart.json").read_text())["status"] == "running"
    r = rt("exec", cid, "sh", "-c", "cat /dev/shm/cc.json; echo; cat /dev/shm/sc.json",
           timeout=60)
    cc, sc = (json.loads(x) for x in r.stdout.splitlines())
    assert cc["bundle"] == sc["bundle"] == "/run/cove/bundle", r.stdout  # the guest's
    assert cc["id"] == cid
    r = rt("exec", cid, "sh", "-c", "echo in-exec; touch /x || echo ro-ok; exit 5", timeout=60)
    assert r.returncode == 5, r.stderr
    assert "in-exec" in r.stdout and "ro-ok" in r.stdout
    r = rt("exec", cid, "/nonexistent", timeout=60)
    assert r.returncode != 0 and "cove-runtime:" in r.stderr
    pids = json.loads(rt("ps", "--format", "json", cid, check=True, timeout=60).stdout)
    assert len(pids) >= 1
    rt("pause", cid, check=True)
    assert rt.status(cid) == "paused"
    rt("resume", cid, check=True)
    assert rt.status(cid) == "running"
    # update: the container's cgroup in the guest; not past the VM's own memory.
    rt("update", "--memory", "100m", "--pids-limit", "50", cid, check=True, timeout=60)
    r = rt("exec", cid, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max",
           timeout=60)
    assert r.stdout.split() == [str(100 << 20), "50"], (r.stdout, r.stderr)
    r = rt("update", "--memory", "4g", cid)
    assert r.returncode == 1
    assert r.stderr.startswith(f"cove-runtime: update {cid}: memory.limit "), r.stderr
    assert "above the VM's memory (512 MiB, set at create)" in r.stderr
    r = rt("events", "--stats", cid)
    assert (r.returncode, r.stderr) == (1, "cove-runtime: events: the vm handler cannot "
                                           "report events or stats of containers\n")
    rt("kill", cid, "TERM", check=True)
    rt.wait_status(cid, "stopped", timeout=60)
    assert not (hooks / "poststop.json").exists()
    rt("delete", cid, check=True)
    assert json.loads((hooks / "poststop.json").read_text())["status"] == "stopped"
    assert not no_qemu_left()


def test_vm_kill_and_force_delete(env: Env) -> None:
    rt = runtime(env, VM_RUNTIME)
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id("vm")
    rt("run", "--detach", "--bundle", str(b.path), cid, timeout=180, check=True)
    assert rt.status(cid) == "running"
    r = rt("delete", cid)
    assert r.returncode == 1 and "not stopped" in r.stderr
    rt("delete", "--force", cid, check=True)
    assert not no_qemu_left()
    assert rt("state", cid).returncode == 1


def test_vm_bad_input(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """No qemu, no kernel, a guest that hangs: one clear line, nothing left running."""
    rt = runtime(env, VM_RUNTIME)
    b = env.bundle(base_config(["true"]))
    monkeypatch.setenv("PATH", "/nonexistent")
    r = rt("create", "--bundle", str(b.path), env.id("vm"))
    assert r.returncode == 1 and "qemu-system-x86_64 not installed" in r.stderr, r.stderr
    monkeypatch.undo()
    monkeypatch.setenv("COVE_VM_KERNEL", "/nonexistent/vmlinuz")
    r = rt("create", "--bundle", str(b.path), env.id("vm"))
    assert r.returncode == 1 and "linux-image-amd64" in r.stderr, r.stderr
    monkeypatch.undo()
    monkeypatch.setenv("COVE_VM_BOOT_TIMEOUT", "1")
    t0 = time.monotonic()
    r = rt("create", "--bundle", str(b.path), env.id("vm"), timeout=60)
    assert r.returncode == 1 and "within 1s" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20
    assert not no_qemu_left()
    assert not list((env.tmp / "state").iterdir())
    monkeypatch.undo()
    # A failing create-time hook (on the host, after the boot) takes the VM down with it.
    cfg = base_config(["true"])
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/false", "args": ["false"]}]}
    b = env.bundle(cfg, name="hooked")
    r = rt("create", "--bundle", str(b.path), env.id("vm"), timeout=180)
    assert r.returncode == 1
    assert r.stderr == "cove-runtime: createRuntime hook #0 (/bin/false): exit status 1\n"
    assert not no_qemu_left()
    assert not list((env.tmp / "state").iterdir())
