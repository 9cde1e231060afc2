"""cove-runtime's native front (cove/runtime/front.c): the short calls it does itself
end as the Python runtime's would, and every other case reaches the Python runtime.

Which of the two answered is read from the calls' execve's (strace -f): the front alone
makes one, a call handed on makes a second, of cove-runtime.py. No timing here:
bench/lifecycle and bench/cri measure what the front saves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.bundles import base_config
from tests.lib.paths import RUNTIME
from tests.lib.runtime import Env

pytestmark = [
    pytest.mark.skipif(not shutil.which("strace"), reason="needs strace"),
    pytest.mark.skipif(not os.path.exists(RUNTIME + ".py"),
                       reason="no native front was compiled (no C compiler)"),
]


def call(env: Env, *args: str, native: bool = True) -> tuple[subprocess.CompletedProcess[str],
                                                            bool]:
    """Run a cove-runtime call; its result and whether the front handled it alone."""
    trace = env.tmp / "execve.txt"
    e = {**os.environ, "COVE_RUNTIME_NATIVE": "1" if native else "0"}
    with open(env.tmp / "out", "w+") as out, open(env.tmp / "err", "w+") as err:
        r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none",
                            "-o", str(trace), RUNTIME, "--root", str(env.rt.root), *args],
                           stdout=out, stderr=err, text=True, timeout=30, env=e)
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(r.args, r.returncode, out.read(), err.read())
    handed_on = "cove-runtime.py" in trace.read_text()
    return p, not handed_on


def created(env: Env, args: list[str] | None = None, **cfg: object) -> str:
    config = base_config(args or ["sleep", "1000"])
    config.update(cfg)
    b = env.bundle(config, name=env.id("b"))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    return cid


def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_the_shims_calls_by_the_front(env: Env) -> None:
    """containerd's shim's sequence, each call answered by the front alone."""
    cid = created(env)
    st = env.rt.state(cid)
    cg = Path(f"/proc/{st['pid']}/cgroup").read_text()
    assert (env.rt.root / cid / "native").read_text().startswith("cove-native 1\n")
    p, alone = call(env, "start", cid)
    assert (p.returncode, p.stderr, alone) == (0, "", True)
    assert env.rt.status(cid) == "running"
    p, alone = call(env, "kill", cid, "SIGKILL")
    assert (p.returncode, p.stderr, alone) == (0, "", True)
    assert gone(st["pid"])
    env.rt.wait_status(cid, "stopped")
    p, alone = call(env, "kill", "--all", cid, "9")
    assert (p.returncode, p.stderr, alone) == (0, "", True)
    p, alone = call(env, "delete", cid)
    assert (p.returncode, p.stderr, alone) == (0, "", True)
    assert not (env.rt.root / cid).exists()
    for line in cg.splitlines():  # every cgroup of the container removed
        _n, ctrl, path = line.split(":", 2)
        name = ctrl.split(",")[0].removeprefix("name=") or "unified"
        assert not Path(f"/sys/fs/cgroup/{name}{path}").exists() or not path.endswith(cid)
    p, alone = call(env, "delete", "--force", cid)  # gone: quiet success, as runc
    assert (p.returncode, p.stderr, alone) == (0, "", True)


def test_the_same_answers_as_the_python_runtime(env: Env) -> None:
    """Each short call's end state and status, by the front and by Python alike."""
    seen = {}
    for native in (True, False):
        cid = created(env)
        pid = env.rt.state(cid)["pid"]
        steps = [call(env, "start", cid, native=native),
                 call(env, "kill", cid, "kill", native=native)]
        assert gone(pid)
        env.rt.wait_status(cid, "stopped")
        steps += [call(env, "kill", cid, native=native),  # not running: refused
                  call(env, "kill", "-a", cid, "KILL", native=native),
                  call(env, "delete", "-f", cid, native=native),
                  call(env, "delete", cid, native=native)]  # no longer exists
        seen[native] = [(p.returncode, p.stderr.replace(cid, "ID")) for p, _a in steps]
        assert [a for _p, a in steps] == ([True, True, False, True, True, False] if native
                                          else [False] * 6)
    assert seen[True] == seen[False]
    assert seen[True][2][0] == 1 and "container not running" in seen[True][2][1]
    assert seen[True][5][0] == 1 and "does not exist" in seen[True][5][1]


def test_what_the_front_hands_on(env: Env, tmp_path: Path) -> None:
    """Hooks, a live container's --all or delete, unknown flags and signals, a
    container without its `native` file: the Python runtime answers."""
    mark = tmp_path / "hooked"
    hooks = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo s >> {mark}"]}],
             "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo p >> {mark}"]}]}
    cid = created(env, hooks=hooks)
    p, alone = call(env, "start", cid)
    assert (p.returncode, alone) == (0, False) and mark.read_text() == "s\n"
    p, alone = call(env, "delete", cid)  # running: refused, by Python's words
    assert (p.returncode, alone) == (1, False) and "not stopped: running" in p.stderr
    p, alone = call(env, "kill", cid, "RTMIN+1")  # a name only Python parses
    assert (p.returncode, alone) == (0, False)
    p, alone = call(env, "kill", "--all", cid, "KILL")  # live: frozen and killed
    assert (p.returncode, alone) == (0, False)
    env.rt.wait_status(cid, "stopped")
    p, alone = call(env, "delete", cid)  # the poststop hook runs
    assert (p.returncode, alone) == (0, False) and mark.read_text() == "s\np\n"

    cid = created(env)
    (env.rt.root / cid / "native").unlink()
    p, alone = call(env, "start", cid)
    assert (p.returncode, alone) == (0, False)
    p, alone = call(env, "kill", "--bogus", cid)
    assert (p.returncode, alone) == (1, False) and p.stderr.startswith("cove-runtime: ")
    p, alone = call(env, "delete", "-f", cid)
    assert (p.returncode, alone) == (0, False)
    p, alone = call(env, "delete", "-f", "../escape")
    assert (p.returncode, alone) == (1, False) and "invalid" in p.stderr


def test_a_busy_cgroup_goes_to_the_python_runtime(env: Env) -> None:
    """Without a pid namespace, init's child outlives it in the cgroup: the front's
    rmdir meets EBUSY and hands delete on; Python kills what is left and removes all."""
    cfg = base_config(["sh", "-c", "sleep 1000 & echo $! > /tmp/child; exit 0"])
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    b = env.bundle(cfg)
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    env.rt.wait_status(cid, "stopped")
    child = int((b.path / "rootfs/tmp/child").read_text())
    p, alone = call(env, "kill", "--all", cid, "CONT")
    assert (p.returncode, alone) == (0, False)  # a process left: Python's freeze + kill
    p, alone = call(env, "delete", cid)
    assert (p.returncode, alone) == (0, False), p.stderr
    assert gone(child) and not (env.rt.root / cid).exists()


def test_state_is_still_pythons(env: Env) -> None:
    cid = created(env)
    p, alone = call(env, "state", cid)
    assert not alone and json.loads(p.stdout)["status"] == "created"
    p, alone = call(env, "delete", "--force", cid)  # live: Python kills and removes
    assert (p.returncode, alone) == (0, False) and not (env.rt.root / cid).exists()
