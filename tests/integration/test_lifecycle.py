"""The lifecycle verbs of cove-runtime on real containers: create, start, state, kill,
delete, run, exec, list, ps, pause, resume, update, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.bundles import base_config
from tests.lib.runtime import Env


def test_run_echo_and_exit_codes(env: Env) -> None:
    b = env.bundle(base_config(["sh", "-c", "echo hello; echo err >&2; exit 3"]))
    cid = env.id()
    p = env.rt("run", "--bundle", str(b.path), cid)
    assert p.stdout == "hello\n"
    assert "err" in p.stderr
    assert p.returncode == 3
    # run deletes the container when it exits
    assert env.rt("state", cid).returncode != 0


def test_run_signal_exit_code_and_forwarding(env: Env) -> None:
    # pid 1 ignores signals it has no handler for, even SIGKILL from inside; a
    # foreground `run` forwards SIGTERM to it, and SIGKILL from `kill` ends it: 137.
    b = env.bundle(base_config(["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"]))
    cid = env.id()
    p = subprocess.Popen([env.rt.binary, "--root", str(env.rt.root), "run", "--bundle",
                          str(b.path), cid])
    env.rt.wait_status(cid, "running")
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 7
    b2 = env.bundle(base_config(["sleep", "1000"]), name="b2")
    cid = env.id()
    p = subprocess.Popen([env.rt.binary, "--root", str(env.rt.root), "run", "--bundle",
                          str(b2.path), cid])
    env.rt.wait_status(cid, "running")
    env.rt("kill", cid, "9", check=True)
    assert p.wait(10) == 137


def test_create_start_state_kill_delete(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    pidfile = env.tmp / "pid"
    env.rt("create", "--bundle", str(b.path), "--pid-file", str(pidfile), cid, check=True)
    st = env.rt.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid
    assert st["bundle"] == str(b.path)
    assert st["pid"] == int(pidfile.read_text())
    assert st["ociVersion"].startswith("1.")
    # init waits before exec: still the runtime, not sleep
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    env.rt("start", cid, check=True)
    assert env.rt.status(cid) == "running"
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().startswith(b"sleep\x001000")
    # start twice is an error
    p = env.rt("start", cid)
    assert p.returncode == 1 and p.stderr.startswith("cove-runtime: ")
    # delete of a running container needs --force
    p = env.rt("delete", cid)
    assert p.returncode == 1 and "not stopped" in p.stderr
    env.rt("kill", cid, "KILL", check=True)
    env.rt.wait_status(cid, "stopped")
    p = env.rt("kill", cid, "KILL")
    assert p.returncode == 1 and "container not running" in p.stderr
    env.rt("delete", cid, check=True)
    assert env.rt("state", cid).returncode == 1


def test_delete_created_container(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    env.rt("delete", cid, check=True)


def test_delete_force_running_and_missing(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    assert env.rt.status(cid) == "running"
    env.rt("delete", "--force", cid, check=True)
    # a second forced delete of a gone container succeeds (containerd relies on it)
    env.rt("delete", "--force", cid, check=True)
    assert env.rt("delete", cid).returncode == 1


def test_kill_signal_names(env: Env) -> None:
    b = env.bundle(base_config(["sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.05; done"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    time.sleep(0.2)
    env.rt("kill", cid, "SIGUSR1", check=True)
    env.rt.wait_status(cid, "stopped")
    env.rt("delete", cid, check=True)
    assert env.rt("kill", "nosuch", "FOO").returncode == 1


def test_kill_all(env: Env) -> None:
    b = env.bundle(base_config(["sh", "-c", "sleep 1000 & sleep 1000 & wait"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    time.sleep(0.2)
    pids = json.loads(env.rt("ps", "--format", "json", cid, check=True).stdout)
    assert len(pids) == 3
    env.rt("kill", "--all", cid, "KILL", check=True)
    env.rt.wait_status(cid, "stopped")
    # As runc: --all of a stopped container succeeds (containerd's shim sends it after
    # init exits), a plain kill is refused with the text containerd matches.
    env.rt("kill", "--all", cid, "KILL", check=True)
    p = env.rt("kill", cid, "KILL")
    assert p.returncode == 1 and "container not running" in p.stderr
    env.rt("delete", cid, check=True)


def test_kill_all_reaches_what_init_left(env: Env) -> None:
    # Without a pid namespace of its own, init's children outlive it: `kill --all`
    # of the stopped container is what ends them (the shim's clean-up after exit).
    cfg = base_config(["sh", "-c", "sleep 1000 & echo $! > /tmp/child; exit 0"])
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                  if n["type"] != "pid"]
    b = env.bundle(cfg)
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    env.rt.wait_status(cid, "stopped")
    child = int((b.path / "rootfs/tmp/child").read_text())
    assert os.path.exists(f"/proc/{child}")
    env.rt("kill", "--all", cid, "KILL", check=True)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and _state_of(child) != "Z":
        assert time.monotonic() < deadline, "kill --all left init's child running"
        time.sleep(0.02)
    env.rt("delete", cid, check=True)


def _state_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_exec(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    p = env.rt("exec", cid, "sh", "-c", "echo $$ $FOO; pwd; exit 5")
    assert p.returncode == 5
    assert p.stdout.split("\n")[1] == "/"
    p = env.rt("exec", "-e", "FOO=bar", "--cwd", "/tmp", "-u", "65534:65534", cid,
               "sh", "-c", "echo $FOO; pwd; id -u; id -g")
    assert p.stdout.split() == ["bar", "/tmp", "65534", "65534"], p.stderr
    # exec sees the container's pid namespace: init is pid 1
    p = env.rt("exec", cid, "cat", "/proc/1/cmdline")
    assert p.stdout.startswith("sleep")
    # --process FILE and --detach with --pid-file
    proc = dict(b.config["process"], args=["sh", "-c", "echo detached > /tmp/out"])
    (env.tmp / "proc.json").write_text(json.dumps(proc))
    pidfile = env.tmp / "exec.pid"
    env.rt("exec", "--process", str(env.tmp / "proc.json"), "--detach", "--pid-file",
           str(pidfile), cid, check=True)
    assert int(pidfile.read_text()) > 0
    for _ in range(100):
        p = env.rt("exec", cid, "cat", "/tmp/out")
        if p.stdout == "detached\n":
            break
        time.sleep(0.05)
    assert p.stdout == "detached\n"
    p = env.rt("exec", cid, "nosuchcmd")
    assert p.returncode != 0 and "nosuchcmd" in p.stderr
    env.rt("delete", "--force", cid, check=True)


def test_list_and_ps(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    a, c = env.id(), env.id()
    env.rt("create", "--bundle", str(b.path), a, check=True)
    env.rt("run", "-d", "--bundle", str(b.path), c, check=True)
    lst = json.loads(env.rt("list", "--format", "json", check=True).stdout)
    assert {(x["id"], x["status"]) for x in lst} == {(a, "created"), (c, "running")}
    assert sorted(env.rt("list", "-q", check=True).stdout.split()) == sorted([a, c])
    table = env.rt("list", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    ps = env.rt("ps", c, check=True).stdout
    assert "sleep 1000" in ps and ps.splitlines()[0].split()[1] == "PID"
    for cid in (a, c):
        env.rt("delete", "--force", cid, check=True)


def test_pause_resume(env: Env) -> None:
    b = env.bundle(base_config(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; "
                                            "sleep 0.01; done"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    n = b.rootfs / "tmp" / "n"
    time.sleep(0.3)
    env.rt("pause", cid, check=True)
    assert env.rt.status(cid) == "paused"
    time.sleep(0.1)
    v1 = n.read_text()
    time.sleep(0.3)
    assert n.read_text() == v1, "a paused container made progress"
    assert env.rt("resume", cid).returncode == 0
    assert env.rt.status(cid) == "running"
    time.sleep(0.3)
    assert n.read_text() != v1
    assert env.rt("resume", cid).returncode == 1
    env.rt("delete", "--force", cid, check=True)


def test_update_and_events(env: Env) -> None:
    cfg = base_config(["sleep", "1000"])
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    cfg["linux"]["resources"]["pids"] = {"limit": 50}
    b = env.bundle(cfg)
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    ev = json.loads(env.rt("events", "--stats", cid, check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"]["limit"] == 50
    env.rt("update", "--memory", "128m", "--pids-limit", "20", cid, check=True)
    env.rt("update", "--resources", "-", cid, input='{"cpu": {"shares": 512}}', check=True)
    ev = json.loads(env.rt("events", "--stats", cid, check=True).stdout)
    assert ev["data"]["memory"]["usage"]["limit"] == 128 << 20
    assert ev["data"]["pids"]["limit"] == 20
    # the limit is enforced inside: a shell can't fork past 20 processes
    p = env.rt("exec", cid, "sh", "-c",
               "for i in $(seq 40); do sleep 5 & done; echo done")
    assert "can't fork" in p.stderr or "Resource temporarily unavailable" in p.stderr, p
    env.rt("delete", "--force", cid, check=True)


def test_state_of_stopped(env: Env) -> None:
    b = env.bundle(base_config(["true"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    env.rt("start", cid, check=True)
    env.rt.wait_status(cid, "stopped")
    st = env.rt.state(cid)
    assert st["pid"] == 0
    assert env.rt("start", cid).returncode == 1
    env.rt("delete", cid, check=True)


def test_spec_and_features(env: Env) -> None:
    d = env.tmp / "specb"
    d.mkdir()
    env.rt("spec", "--bundle", str(d), check=True)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]
    assert env.rt("spec", "--bundle", str(d)).returncode == 1  # exists
    os.unlink(d / "config.json")
    env.rt("spec", "--rootless", "--bundle", str(d), check=True)
    cfg = json.loads((d / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"]
    feats = json.loads(env.rt("features", check=True).stdout)
    assert "pid" in feats["linux"]["namespaces"]
    assert feats["hooks"] == ["prestart", "createRuntime", "createContainer",
                              "startContainer", "poststart", "poststop"]
    v = env.rt("--version", check=True).stdout
    assert any(line.startswith("commit: ") for line in v.splitlines())


def _freezer_dir(pid: int) -> Path:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _n, ctrls, path = line.rstrip("\n").split(":", 2)
            if "freezer" in ctrls.split(","):
                return Path("/sys/fs/cgroup/freezer" + path)
    raise AssertionError(f"pid {pid} has no freezer cgroup")


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer/"),
                    reason="no v1 freezer hierarchy on this host")
def test_delete_force_when_the_freezer_cgroup_is_gone(env: Env) -> None:
    """A half-destroyed container is always removable: its freezer cgroup removed by
    hand (init moved out first, as rmdir needs), `delete --force` still kills init and
    removes every other cgroup and the state, quietly."""
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    pid = env.rt.state(cid)["pid"]
    fz = _freezer_dir(pid)
    Path("/sys/fs/cgroup/freezer/cgroup.procs").write_text(str(pid))
    fz.rmdir()
    p = env.rt("delete", "--force", cid)
    assert (p.returncode, p.stderr) == (0, "")
    assert env.rt("state", cid).returncode == 1
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")

    b2 = env.bundle(base_config(["true"]), name="b2")
    cid = env.id()
    env.rt("create", "--bundle", str(b2.path), cid, check=True)
    fz = _freezer_dir(env.rt.state(cid)["pid"])
    env.rt("start", cid, check=True)
    env.rt.wait_status(cid, "stopped")
    fz.rmdir()
    p = env.rt("delete", "--force", cid)
    assert (p.returncode, p.stderr) == (0, "")
    assert env.rt("state", cid).returncode == 1


def test_delete_force_after_an_aborted_create(env: Env) -> None:
    """A create killed (SIGKILL from a caller's timeout) before its first state write
    leaves the state dir with config.json and the cgroup it made, with init in it.
    `delete --force` finds that cgroup as create named it, kills init, removes it."""
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    pid = env.rt.state(cid)["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        dirs = [Path(f"/sys/fs/cgroup/{c.split(',')[0] or 'unified'}{p}")
                for _n, c, p in (ln.rstrip("\n").split(":", 2) for ln in f)
                if not c.startswith("name=")]
    dirs = [d for d in dirs if d.is_dir() and d.name == cid]
    assert dirs, "init is in no cgroup of its own"
    (env.rt.root / cid / "state.json").unlink()  # as if create had died before it
    p = env.rt("delete", "--force", cid)
    assert (p.returncode, p.stderr) == (0, "")
    assert not (env.rt.root / cid).exists()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")
    assert [d for d in dirs if d.exists()] == []
