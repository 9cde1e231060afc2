"""Differential tests: the same bundle under Debian's runc and under cove-runtime gives
the same stdout, exit code and state transitions. Where Cove differs on purpose, the
test says why."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.conftest import Env
from tests.helpers import Runtime, base_config

RUNC = shutil.which("runc")
pytestmark = pytest.mark.skipif(RUNC is None, reason="runc is not installed")

CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "echo": (["echo", "hello", "world"], {}),
    "exit-code": (["sh", "-c", "exit 42"], {}),
    "env": (["sh", "-c", "env | sort"], {"env": ["A=1", "B=two words"]}),
    "cwd": (["pwd"], {"cwd": "/tmp"}),
    "user": (["id"], {"user": {"uid": 65534, "gid": 65534, "additionalGids": [1]}}),
    "caps": (["sh", "-c", "grep -E '^Cap' /proc/self/status"], {}),
    "nnp-seccomp-status": (["sh", "-c", "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status"],
                           {}),
    "pid1": (["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"], {}),
    "hostname": (["hostname"], {}),
    "dev": (["ls", "-l", "/dev"], {}),
    "masked": (["sh", "-c", "wc -c < /proc/kcore; ls /sys/firmware | wc -l; "
                            "touch /proc/sysrq-trigger 2>&1 | sed 's/.*: //'"], {}),
    "mountpoints": (["sh", "-c", "cut -d' ' -f2,3 /proc/mounts | sort"], {}),
    "rlimit": (["sh", "-c", "ulimit -n; ulimit -Hn"], {}),
    "umask": (["sh", "-c", "umask"], {}),
    "missing-binary": (["/nonexistent"], {}),
}

# Known, deliberate differences: case -> (line Cove adds, why).
WHY_DIFFERENT = {
    # On a hybrid host runc 1.1 hides the cgroup2 hierarchy from the container. Cove
    # binds the container's own directory of it too: that is where hybrid hosts keep
    # controllers such as hugetlb (this host), and systemd in a container looks for it.
    "mountpoints": "/sys/fs/cgroup/unified cgroup2\n",
}


def _run(rt: Runtime, env: Env, name: str, args: list[str], proc: dict[str, Any]) -> \
        tuple[int, str]:
    cfg = base_config(args)
    cfg["process"].update(proc)
    if "env" in proc:
        cfg["process"]["env"] = base_config()["process"]["env"] + proc["env"]
    b = env.bundle(cfg, name=name)
    cid = env.id()
    p = rt("run", "--bundle", str(b.path), cid)
    rt("delete", "--force", cid)
    return p.returncode, p.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_as_runc(env: Env, case: str) -> None:
    assert RUNC
    args, proc = CASES[case]
    runc = Runtime(RUNC, env.tmp / "runc-state")
    r_code, r_out = _run(runc, env, "runc-bundle", args, proc)
    c_code, c_out = _run(env.rt, env, "cove-bundle", args, proc)
    if case == "missing-binary":
        # Both refuse at create time; runc's message differs (Go's exec error text).
        assert r_code != 0 and c_code != 0
        return
    assert c_code == r_code
    if case in WHY_DIFFERENT:
        c_out = c_out.replace(WHY_DIFFERENT[case], "")
    assert c_out == r_out


def test_state_transitions_match(env: Env) -> None:
    assert RUNC
    seen: dict[str, list[Any]] = {}
    for name, rt in (("runc", Runtime(RUNC, env.tmp / "runc-state")), ("cove", env.rt)):
        b = env.bundle(base_config(["sleep", "1000"]), name=f"{name}-b")
        cid = env.id()
        steps: list[Any] = []
        rt("create", "--bundle", str(b.path), cid, check=True)
        st = rt.state(cid)
        steps.append((st["status"], sorted(st)))
        rt("start", cid, check=True)
        steps.append(rt.status(cid))
        steps.append(rt("start", cid).returncode)
        steps.append(rt("delete", cid).returncode)
        rt("pause", cid, check=True)
        steps.append(rt.status(cid))
        rt("resume", cid, check=True)
        steps.append(rt.status(cid))
        rt("kill", cid, "KILL", check=True)
        rt.wait_status(cid, "stopped")
        steps.append(rt.state(cid)["pid"])
        steps.append(rt("kill", cid, "KILL").returncode)
        rt("delete", cid, check=True)
        steps.append(rt("state", cid).returncode)
        seen[name] = steps
    # runc's state has the same keys (plus annotations when set)
    assert seen["cove"] == seen["runc"]


def test_list_json_keys_match(env: Env) -> None:
    assert RUNC
    keys = {}
    for name, rt in (("runc", Runtime(RUNC, env.tmp / "runc-state")), ("cove", env.rt)):
        b = env.bundle(base_config(["sleep", "1000"]), name=f"{name}-b")
        cid = env.id()
        rt("create", "--bundle", str(b.path), cid, check=True)
        keys[name] = sorted(json.loads(rt("list", "--format", "json", check=True).stdout)[0])
        rt("delete", "--force", cid, check=True)
    assert set(keys["cove"]) >= set(keys["runc"]) - {"annotations"}
