"""Rootless: `cove-runtime` run by an ordinary user, with a config from
`cove-runtime spec --rootless` (and with several id ranges through newuidmap and
/etc/subuid). Each test makes its own user (useradd, with the /etc/subuid and
/etc/subgid ranges useradd gives it), a bundle that user owns, and runs the runtime
as that user with `runuser`; afterwards it checks that no process of the user, no
mount and no state is left, then removes the user and restores /etc/subuid and
/etc/subgid byte for byte. Debian's runc is run the same way where it tells something.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import template_rootfs
from tests.lib.paths import RUNTIME
from tests.lib.rootless import User
from tests.lib.runtime import Env
from tests.lib.wait import wait_for

RUNC = shutil.which("runc")
RUNC_FCHOWN = ("runc 1.1.5 rootless fails on this host with 'fchown fd 7: operation not "
               "permitted' (docs: /work/shared/peers-on-this-host.md)")


def bundle(u: User, env: Env, args: list[str], name: str = "rl",
           edit: Any = None, tool: str = RUNTIME) -> Path:
    """A bundle the user owns, its config.json written by `<tool> spec --rootless` as
    that user, then adjusted (non-interactive, `args`)."""
    b = env.tmp / name
    b.mkdir()
    shutil.copytree(template_rootfs(env.tmp.parent), b / "rootfs", symlinks=True)
    for dirpath, dirnames, filenames in os.walk(b):
        for n in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, n), u.uid, u.gid, follow_symlinks=False)
    os.chown(b, u.uid, u.gid)
    p = u.run([tool, "spec", "--rootless"], cwd=str(b))
    assert p.returncode == 0, p.stderr
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": u.uid, "size": 1}]
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    if edit is not None:
        edit(cfg)
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def rt(u: User, *args: str, tool: str = RUNTIME, **kw: Any) -> subprocess.CompletedProcess[str]:
    return u.run([tool, *args], **kw)


def new_id() -> str:
    return f"rl{uuid.uuid4().hex[:10]}"


def multi_range(u: User) -> Any:
    """0 -> the user, 1..65536 -> its /etc/subuid (subgid) range: through newuidmap."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["linux"]["uidMappings"] = [
            {"containerID": 0, "hostID": u.uid, "size": 1},
            {"containerID": 1, "hostID": u.subuid[0], "size": u.subuid[1]}]
        cfg["linux"]["gidMappings"] = [
            {"containerID": 0, "hostID": u.gid, "size": 1},
            {"containerID": 1, "hostID": u.subgid[0], "size": u.subgid[1]}]
        cfg["root"]["readonly"] = False
        cfg["process"]["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [100]}
    return edit


# cove-runtime


def test_run_echo_exit_code_and_mapping(env: Env, user: User) -> None:
    b = bundle(user, env, ["sh", "-c", "echo hello; id -u; cat /proc/self/uid_map "
                           "/proc/self/gid_map /proc/self/setgroups; exit 7"])
    p = rt(user, "run", "--bundle", str(b), new_id())
    assert p.returncode == 7, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "hello" and lines[1] == "0"
    assert lines[2].split() == ["0", str(user.uid), "1"]
    assert lines[3].split() == ["0", str(user.gid), "1"]
    assert lines[4] == "deny"  # an unprivileged gid_map needs it
    # No cgroup is writable to the user here and none is asked for: no warnings at all.
    assert p.stderr == ""


def test_lifecycle_exec_kill_delete(env: Env, user: User) -> None:
    b = bundle(user, env, ["sleep", "1000"])
    cid = new_id()
    p = rt(user, "create", "--bundle", str(b), cid)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    # The default root for a user: $XDG_RUNTIME_DIR/cove-runtime (runc's is .../runc).
    assert (user.xdg / "cove-runtime" / cid / "state.json").exists()
    st = json.loads(rt(user, "state", cid).stdout)
    assert st["status"] == "created" and st["owner"] == str(user.uid)
    init = st["pid"]
    assert os.stat(f"/proc/{init}").st_uid == user.uid  # container root is the user
    assert cid in rt(user, "list", "-q").stdout.split()
    assert rt(user, "--root", str(user.xdg / "cove-runtime"), "state", cid).returncode == 0
    assert rt(user, "start", cid).returncode == 0
    assert json.loads(rt(user, "state", cid).stdout)["status"] == "running"
    p = rt(user, "exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map; echo $$")
    assert p.returncode == 0, p.stderr
    out = p.stdout.split("\n")
    assert out[0] == "0" and out[1].split() == ["0", str(user.uid), "1"]
    assert rt(user, "exec", cid, "sh", "-c", "exit 5").returncode == 5
    assert rt(user, "exec", "-d", cid, "sleep", "900").returncode == 0
    ps = json.loads(rt(user, "ps", "--format", "json", cid).stdout)
    assert init in ps and len(ps) == 2  # no cgroup: found through the pid namespace
    # kill --all reaches the exec'd process too (sleep as pid 1 ignores TERM).
    assert rt(user, "kill", "--all", cid, "TERM").returncode == 0
    wait_for(lambda: json.loads(rt(user, "ps", "--format", "json", cid).stdout) == [init], 5,
             "only the init in `ps`", interval=0.05)
    assert rt(user, "delete", cid).returncode == 1  # running
    assert rt(user, "kill", cid, "KILL").returncode == 0
    wait_for(lambda: '"stopped"' in rt(user, "state", cid).stdout, 5, "stopped",
             interval=0.05)
    p = rt(user, "delete", cid)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert rt(user, "state", cid).returncode == 1


def test_delete_force_running(env: Env, user: User) -> None:
    b = bundle(user, env, ["sleep", "1000"])
    cid = new_id()
    assert rt(user, "run", "-d", "--bundle", str(b), cid).returncode == 0
    assert rt(user, "exec", "-d", cid, "sleep", "900").returncode == 0
    p = rt(user, "delete", "--force", cid)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_multi_range_through_newuidmap(env: Env, user: User) -> None:
    assert user.subuid[1] >= 65536 and user.subgid[1] >= 65536
    b = bundle(user, env, ["sh", "-c", "id; cat /proc/self/uid_map /proc/self/setgroups; "
                           "touch /tmp/n && ls -n /tmp/n"], edit=multi_range(user))
    p = rt(user, "--rootless", "auto", "run", "--bundle", str(b), new_id())
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("uid=65534(nobody) gid=65534(nogroup)")
    assert "groups=100" in lines[0]  # setgroups is allowed: newgidmap mapped the ranges
    assert lines[1].split() == ["0", str(user.uid), "1"]
    assert lines[2].split() == ["1", str(user.subuid[0]), str(user.subuid[1])]
    assert lines[3] == "allow"
    assert lines[4].split()[2:4] == ["65534", "65534"]
    st = os.stat(b / "rootfs" / "tmp" / "n")  # on the host: the subordinate ids
    assert (st.st_uid, st.st_gid) == (user.subuid[0] + 65533, user.subgid[0] + 65533)


def test_range_not_granted_fails_cleanly(env: Env, user: User) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        multi_range(user)(cfg)
        cfg["linux"]["uidMappings"][1]["hostID"] = user.subuid[0] + user.subuid[1]
    b = bundle(user, env, ["true"], edit=edit)
    cid = new_id()
    p = rt(user, "run", "--bundle", str(b), cid)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cove-runtime: linux.uidMappings: "
                                                   "newuidmap failed: "), p.stderr
    assert "not allowed" in lines[0]
    assert rt(user, "state", cid).returncode == 1


def test_rootless_needs_a_user_namespace(env: Env, user: User) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        lin = cfg["linux"]
        lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "user"]
        del lin["uidMappings"], lin["gidMappings"]
    b = bundle(user, env, ["true"], edit=edit)
    p = rt(user, "run", "--bundle", str(b), new_id())
    assert p.returncode == 1
    assert p.stderr.strip() == ("cove-runtime: linux.namespaces: a rootless container needs "
                                "a user namespace (see `cove-runtime spec --rootless`)")


def test_resources_asked_fail_clearly(env: Env, user: User) -> None:
    b = bundle(user, env, ["true"],
               edit=lambda c: c["linux"].__setitem__("resources", {"pids": {"limit": 10}}))
    p = rt(user, "run", "--bundle", str(b), new_id())
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "linux.resources.pids.limit" in lines[0]
    assert "not writable (rootless)" in lines[0]


def test_root_fallback_without_xdg(env: Env, user: User) -> None:
    """No XDG_RUNTIME_DIR: /tmp/cove-runtime-<uid>, made 0700; one planted there by
    someone else is refused rather than used."""
    fallback = Path(f"/tmp/cove-runtime-{user.uid}")
    assert not fallback.exists()
    b = bundle(user, env, ["true"])
    try:
        p = rt(user, "run", "--bundle", str(b), new_id(), xdg=False)
        assert p.returncode == 0, p.stderr
        st = fallback.stat()
        assert st.st_uid == user.uid and st.st_mode & 0o777 == 0o700
        assert rt(user, "list", "-q", xdg=False).stdout == ""
        shutil.rmtree(fallback)
        fallback.mkdir(mode=0o755)  # root's, not the user's
        p = rt(user, "list", xdg=False)
        assert p.returncode == 1
        assert p.stderr.startswith(f"cove-runtime: state root {fallback}: not a directory "
                                   "owned by us")
        fallback.rmdir()
        fallback.symlink_to(user.home)
        assert rt(user, "list", xdg=False).returncode == 1
    finally:
        if fallback.is_symlink():
            fallback.unlink()
        elif fallback.exists():
            shutil.rmtree(fallback)


# Debian's runc, the same way.


def _runc_or_xfail(p: subprocess.CompletedProcess[str]) -> None:
    if p.returncode != 0 and "fchown" in p.stderr:
        pytest.xfail(RUNC_FCHOWN)


def test_runc_rootless_run(env: Env, user: User) -> None:
    if RUNC is None:
        pytest.skip("runc is not installed")
    b = bundle(user, env, ["sh", "-c", "echo hello; cat /proc/self/uid_map; exit 7"],
               tool=RUNC)
    p = rt(user, "run", "--bundle", str(b), new_id(), tool=RUNC)
    _runc_or_xfail(p)
    assert p.returncode == 7, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hello" and lines[1].split() == ["0", str(user.uid), "1"]


def test_runc_rootless_multi_range(env: Env, user: User) -> None:
    if RUNC is None:
        pytest.skip("runc is not installed")
    def edit(cfg: dict[str, Any]) -> None:
        multi_range(user)(cfg)
        # runc refuses any additionalGids when rootless ("cannot set any additional
        # groups in a rootless container"), even with setgroups allowed by newgidmap.
        del cfg["process"]["user"]["additionalGids"]
    b = bundle(user, env, ["sh", "-c", "id; touch /tmp/n && ls -n /tmp/n"], edit=edit,
               tool=RUNC)
    p = rt(user, "run", "--bundle", str(b), new_id(), tool=RUNC)
    _runc_or_xfail(p)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("uid=65534(nobody) gid=65534(nogroup)")
    st = os.stat(b / "rootfs" / "tmp" / "n")
    assert (st.st_uid, st.st_gid) == (user.subuid[0] + 65533, user.subgid[0] + 65533)
