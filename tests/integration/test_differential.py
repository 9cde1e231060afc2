"""Differential tests: the same bundle under Debian's runc and under cove-runtime gives
the same stdout, exit code and state transitions. Where Cove differs on purpose, the
test says why."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.lib.bundles import base_config
from tests.lib.refruntimes import CRUN, CRUN_OCI_VERSION, RUNC, crun, runc
from tests.lib.runtime import Env, Runtime

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
    # both bring up the loopback of a network namespace they create
    "loopback": (["ip", "-o", "link"], {}),
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


# --- The hooks' side of the lifecycle, against crun (runc 1.1 differs from the spec
# here: "creating" for the create-time hooks, "created" for poststart, and a failing
# poststart hook fails `run`).

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
# The runtime spec's lifecycle: the create-time hooks run after the environment is made
# (step 2, after which the state is "created") and startContainer before the user's
# program runs (still "created"); poststart after it started; poststop after it ended.
SPEC_HOOK_STATUS = {"prestart": "created", "createRuntime": "created",
                    "createContainer": "created", "startContainer": "created",
                    "poststart": "running", "poststop": "stopped"}


def _hook_states(env: Env, rt: Runtime, name: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run `true` with a hook of every kind, each recording the state it read on stdin."""
    cfg = base_config(["true"])
    cfg["ociVersion"] = CRUN_OCI_VERSION
    b = env.bundle(cfg, name=name)
    log = b.path / "hooks.log"
    script = b.path / "hook.sh"
    script.write_text(f'#!/bin/sh\necho "$1 $(cat)" >> {log}\n')
    script.chmod(0o755)
    hooks: dict[str, list[dict[str, Any]]] = {
        k: [{"path": str(script), "args": ["hook.sh", k]}] for k in HOOK_KINDS}
    # startContainer's path is resolved in the container: its log is in the rootfs
    hooks["startContainer"] = [{"path": "/bin/sh", "args": [
        "sh", "-c", 'echo "startContainer $(cat)" >> /hooks.log']}]
    b.config["hooks"] = hooks
    b.write()
    cid = env.id()
    p = rt("run", "--bundle", str(b.path), cid)
    rt("delete", "--force", cid)
    lines = log.read_text().splitlines() if log.exists() else []
    inside = b.rootfs / "hooks.log"
    lines += inside.read_text().splitlines() if inside.exists() else []
    return p.returncode, {k: json.loads(v) for k, v in (ln.split(" ", 1) for ln in lines)}


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_hook_states_follow_the_spec_as_crun(env: Env) -> None:
    c_code, cove = _hook_states(env, env.rt, "cove-b")
    r_code, ref = _hook_states(env, crun(env), "crun-b")
    assert c_code == 0 and r_code == 0
    assert sorted(cove) == sorted(ref) == sorted(HOOK_KINDS)
    assert {k: s["status"] for k, s in cove.items()} == SPEC_HOOK_STATUS
    # crun 1.8 says "starting" to startContainer hooks, a status the spec does not have
    assert {k: s["status"] for k, s in ref.items()} == dict(SPEC_HOOK_STATUS,
                                                            startContainer="starting")
    # pid: as the runtime sees it for hooks run on the host, as the container sees it
    # for hooks run in its namespaces (crun 1.8 says 0 there); none once stopped.
    init = cove["prestart"]["pid"]
    assert init > 1 and cove["createRuntime"]["pid"] == cove["poststart"]["pid"] == init
    assert cove["createContainer"]["pid"] == cove["startContainer"]["pid"] == 1
    assert cove["poststop"]["pid"] == ref["poststop"]["pid"] == 0
    assert all(s["id"] and s["bundle"].endswith("cove-b") for s in cove.values())


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_failing_poststart_and_poststop_hooks_warn_and_go_on(env: Env) -> None:
    """The spec: a failing poststart or poststop hook is a warning, and the remaining
    hooks and the lifecycle go on as if it had succeeded (as crun; runc 1.1 fails `run`
    and skips the rest)."""
    seen = {}
    for name, rt in (("cove", env.rt), ("crun", crun(env))):
        cfg = base_config(["true"])
        cfg["ociVersion"] = CRUN_OCI_VERSION
        b = env.bundle(cfg, name=f"{name}-b")
        log = b.path / "hooks.log"

        def hook(tag: str, code: int, log: Any = log) -> dict[str, Any]:
            return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {tag} >> {log}; exit {code}"]}

        b.config["hooks"] = {"poststart": [hook("poststart-0", 1), hook("poststart-1", 0)],
                             "poststop": [hook("poststop-0", 2), hook("poststop-1", 0),
                                          hook("poststop-2", 3)]}
        b.write()
        cid = env.id()
        p = rt("run", "--bundle", str(b.path), cid)
        rt("delete", "--force", cid)
        seen[name] = (p.returncode, log.read_text().split())
        if name == "cove":
            assert p.stderr.splitlines() == [
                "cove-runtime: warning: poststart hook #0 (/bin/sh): exit status 1",
                "cove-runtime: warning: poststop hook #0 (/bin/sh): exit status 2",
                "cove-runtime: warning: poststop hook #2 (/bin/sh): exit status 3"], p.stderr
    assert seen["cove"] == seen["crun"] == (0, ["poststart-0", "poststart-1", "poststop-0",
                                                "poststop-1", "poststop-2"])


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_hook_env_absent_is_inherited_empty_is_empty(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook without `env` runs with the runtime's environment (as runc and crun); one
    with `"env": []` with none. Hooks run in the container's namespaces get the
    container process's environment instead (runc's createContainer, and both runc's
    and crun's startContainer): nothing of the host's environment crosses over."""
    monkeypatch.setenv("COVE_HOOK_PROBE", "from-the-runtime")
    seen = {}
    for name, rt in (("cove", env.rt), ("crun", crun(env))):
        cfg = base_config(["true"])
        cfg["ociVersion"] = CRUN_OCI_VERSION
        b = env.bundle(cfg, name=f"{name}-b")

        def dump(tag: str, inside: bool = False, b: Any = b) -> list[str]:
            # the state on stdin read first: crun fails a hook that exits before its write
            return ["sh", "-c", "while read -r _; do :; done; "
                    f"env > {'' if inside else b.path}/env-{tag}"]

        b.config["hooks"] = {
            "prestart": [{"path": "/bin/sh", "args": dump("absent")},
                         {"path": "/bin/sh", "args": dump("empty"), "env": []},
                         {"path": "/bin/sh", "args": dump("given"), "env": ["GIVEN=1"]}],
            "poststop": [{"path": "/bin/sh", "args": dump("poststop")}],
            "startContainer": [{"path": "/bin/sh", "args": dump("start", inside=True)}],
        }
        b.write()
        cid = env.id()
        p = rt("run", "--bundle", str(b.path), cid)
        rt("delete", "--force", cid)
        assert p.returncode == 0, (name, p.stderr)
        envs = {f.name[4:]: dict(ln.split("=", 1) for ln in f.read_text().splitlines())
                for f in [*b.path.glob("env-*"), *b.rootfs.glob("env-*")]}
        seen[name] = {tag: (e.get("COVE_HOOK_PROBE"), e.get("GIVEN"), e.get("TERM"))
                      for tag, e in envs.items()}
    assert seen["cove"] == seen["crun"] == {
        "absent": ("from-the-runtime", None, os.environ.get("TERM")),
        "empty": (None, None, None),
        "given": (None, "1", None),
        "poststop": ("from-the-runtime", None, os.environ.get("TERM")),
        "start": (None, None, "xterm"),  # the container's process.env
    }


# --- create-time corners, against runc and crun


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_readonly_root_with_missing_cwd(env: Env) -> None:
    """process.cwd is made before the read-only remount of the root (as runc, crun)."""
    seen = {}
    for name, rt in (("cove", env.rt), ("runc", runc(env)), ("crun", crun(env))):
        cfg = base_config(["sh", "-c", "pwd; touch x 2>&1 | sed 's/.*: //'"])
        cfg["ociVersion"] = CRUN_OCI_VERSION
        cfg["root"]["readonly"] = True
        cfg["process"]["cwd"] = "/work/deep"
        b = env.bundle(cfg, name=f"{name}-b")
        cid = env.id()
        p = rt("run", "--bundle", str(b.path), cid)
        rt("delete", "--force", cid)
        seen[name] = (p.returncode, p.stdout)
        assert (b.rootfs / "work" / "deep").is_dir()
    assert seen["cove"] == seen["runc"] == seen["crun"] == (
        0, "/work/deep\nRead-only file system\n")


@pytest.mark.skipif(CRUN is None, reason="crun is not installed")
def test_userns_bind_source_in_a_host_dir_the_container_cannot_search(env: Env) -> None:
    """Bind sources are opened from the host's side, not as the container's root (an
    unmapped uid to the host): a source under a 0700 host directory is mounted, as
    runc 1.1 and crun do. The mount stays read-only inside."""
    hidden = env.tmp / "hidden"
    (hidden / "data").mkdir(parents=True)
    (hidden / "data" / "f").write_text("behind a 0700 directory\n")
    hidden.chmod(0o700)
    seen = {}
    for name, rt in (("cove", env.rt), ("runc", runc(env)), ("crun", crun(env))):
        cfg = base_config(["sh", "-c", "cat /data/f; touch /data/x 2>&1 | sed 's/.*: //'"])
        cfg["ociVersion"] = CRUN_OCI_VERSION
        lin = cfg["linux"]
        lin["namespaces"].append({"type": "user"})
        lin["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        lin["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["mounts"].append({"destination": "/data", "type": "bind",
                              "source": str(hidden / "data"), "options": ["rbind", "ro"]})
        b = env.bundle(cfg, name=f"{name}-b")
        os.chown(b.rootfs, 100000, 100000)
        cid = env.id()
        p = rt("run", "--bundle", str(b.path), cid)
        rt("delete", "--force", cid)
        seen[name] = (p.returncode, p.stdout, p.stderr if name == "cove" else "")
    assert seen["cove"] == (0, "behind a 0700 directory\nRead-only file system\n", "")
    assert seen["runc"][:2] == seen["crun"][:2] == seen["cove"][:2]
