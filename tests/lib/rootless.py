"""Rootless tests' pieces: an unprivileged user made for one test (`User`; the `user`
fixture of tests/conftest.py makes it and checks what it left), and that user's `cove`
in a network namespace of the test's (`Rootless`; the `rl` fixture of
tests/engine/conftest.py)."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from tests.lib.paths import ROOT
from tests.lib.runtime import Env
from tests.lib.wait import WaitTimeout, wait_for

SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
COVE = str(ROOT / ".venv" / "bin" / "cove")


class User:
    """An unprivileged user made for one test, and a way to run things as it."""

    def __init__(self, name: str, home: Path, xdg: Path) -> None:
        pw = pwd.getpwnam(name)
        self.name = name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = home
        self.xdg = xdg
        self.subuid = subid_range(SUBID_FILES[0], name)
        self.subgid = subid_range(SUBID_FILES[1], name)

    def run(self, argv: list[str], cwd: str | None = None, xdg: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={self.home}",
               f"USER={self.name}"]
        if xdg:
            env.append(f"XDG_RUNTIME_DIR={self.xdg}")
        # Files, not pipes, for stdio (see tests/lib/runtime.py's Runtime); made by root,
        # as an engine's.
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


def subid_range(path: Path, name: str) -> tuple[int, int]:
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[0] == name:
            return int(parts[1]), int(parts[2])
    return 0, 0


def next_free_subid(path: Path) -> int:
    end = 100000
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            end = max(end, int(parts[1]) + int(parts[2]))
    return end


def owner_uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def user_leftovers(u: User, env: Env) -> list[str]:
    out = []
    # Zombies of the container are reaped by the host's init a little later.
    try:
        wait_for(lambda: not u.pids(), 5, f"{u.name}'s processes gone", interval=0.05)
    except WaitTimeout:
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


class Rootless:
    """The user's `cove`, in the test's network namespace."""

    def __init__(self, u: User, netns: str) -> None:
        self.u = u
        self.netns = netns
        self.root = u.home / ".local" / "share" / "cove"

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        u = self.u
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "runuser", "-u", u.name, "--",
                "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={u.home}",
                f"USER={u.name}", f"XDG_RUNTIME_DIR={u.xdg}", COVE, *args]
        # Files, not pipes: a detached container's processes must not hold our pipe.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                               text=True, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(argv, r.returncode, out.read(), err.read())

    def ok(self, *args: str) -> str:
        r = self(*args)
        assert r.returncode == 0, f"cove {' '.join(args)}: {r.stderr}"
        return r.stdout

    def in_netns(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command of root's in the test's network namespace."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *argv],
                              capture_output=True, text=True, timeout=timeout)


def slirp_pids(u: User) -> list[int]:
    out = []
    for pid in u.pids():
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "slirp4netns":
                    out.append(pid)
        except OSError:
            pass
    return out


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
