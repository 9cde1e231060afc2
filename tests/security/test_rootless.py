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
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.helpers import RUNTIME, template_rootfs

RUNC = shutil.which("runc")
RUNC_FCHOWN = ("runc 1.1.5 rootless fails on this host with 'fchown fd 7: operation not "
               "permitted' (docs: /work/shared/peers-on-this-host.md)")
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


class User:
    """An unprivileged user made for one test, and a way to run things as it."""

    def __init__(self, name: str, home: Path, xdg: Path) -> None:
        pw = pwd.getpwnam(name)
        self.name = name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = home
        self.xdg = xdg
        self.subuid = _subid_range(SUBID_FILES[0], name)
        self.subgid = _subid_range(SUBID_FILES[1], name)

    def run(self, argv: list[str], cwd: str | None = None, xdg: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={self.home}",
               f"USER={self.name}"]
        if xdg:
            env.append(f"XDG_RUNTIME_DIR={self.xdg}")
        # Files, not pipes, for stdio (see helpers.Runtime); made by root, as an engine's.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run(["runuser", "-u", self.name, "--", *env, *argv], stdout=out,
                               stderr=err, stdin=subprocess.DEVNULL, text=True, cwd=cwd,
                               timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(r.args, r.returncode, out.read(), err.read())

    def pids(self) -> list[int]:
        """Live (not zombie) processes of the user."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{p}")
                with open(f"/proc/{p}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if st.st_uid == self.uid and state not in (b"Z", b"X"):
                out.append(int(p))
        return out


def _subid_range(path: Path, name: str) -> tuple[int, int]:
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[0] == name:
            return int(parts[1]), int(parts[2])
    return 0, 0


def _next_free_subid(path: Path) -> int:
    end = 100000
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            end = max(end, int(parts[1]) + int(parts[2]))
    return end


@pytest.fixture
def user(env: Env) -> Iterator[User]:
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser")
    name = f"cove{uuid.uuid4().hex[:10]}"
    saved = {p: p.read_bytes() if p.exists() else None for p in SUBID_FILES}
    subprocess.run(["useradd", "-m", "-U", "-s", "/bin/sh", name], check=True,
                   capture_output=True)
    try:
        # Debian's useradd gives new users a range (SUB_UID_MIN in login.defs); where it
        # does not, add one.
        for p in SUBID_FILES:
            if _subid_range(p, name) == (0, 0):
                with open(p, "a") as f:
                    f.write(f"{name}:{_next_free_subid(p)}:65536\n")
        home = Path(pwd.getpwnam(name).pw_dir)
        xdg = env.tmp / "xdg"
        xdg.mkdir(mode=0o700)
        u = User(name, home, xdg)
        os.chown(xdg, u.uid, u.gid)
        yield u
        left = _user_leftovers(u, env)
        assert not left, f"left behind: {left}"
    finally:
        u_pids = []
        try:
            uid = pwd.getpwnam(name).pw_uid
            u_pids = [int(p) for p in os.listdir("/proc")
                      if p.isdigit() and _owner(p) == uid]
        except KeyError:
            pass
        for pid in u_pids:  # the test user's own processes (a failed test's containers)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        _wait(lambda: not any(os.path.exists(f"/proc/{p}") for p in u_pids), 5)
        subprocess.run(["userdel", "-r", name], capture_output=True)
        for p, data in saved.items():
            if data is None:
                p.unlink(missing_ok=True)
            elif p.read_bytes() != data:
                p.write_bytes(data)


def _owner(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _user_leftovers(u: User, env: Env) -> list[str]:
    out = []
    # Zombies of the container are reaped by the host's init a little later.
    if not _wait(lambda: not u.pids(), 5):
        out += [f"process {p} of {u.name}" for p in u.pids()]
    state = u.xdg / "cove-runtime"
    if state.is_dir():
        out += [f"state entry {n}" for n in os.listdir(state) if n != "seccomp-cache"]
    rs = u.xdg / "runc"
    if rs.is_dir():
        out += [f"runc state entry {n}" for n in os.listdir(rs)]
    with open("/proc/self/mountinfo") as f:
        out += [f"mount {ln.split()[4]}" for ln in f if str(env.tmp) in ln]
    return out


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
    assert _wait(lambda: json.loads(rt(user, "ps", "--format", "json", cid).stdout)
                 == [init], 5)
    assert rt(user, "delete", cid).returncode == 1  # running
    assert rt(user, "kill", cid, "KILL").returncode == 0
    assert _wait(lambda: '"stopped"' in rt(user, "state", cid).stdout, 5)
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
