"""What a test may leave on the host, found and removed: mounts, processes, cgroups,
paths a daemon makes outside its temp dir. The leftover checks of the fixtures use
these (tests/conftest.py, tests/peers, tests/cri, tests/engine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"


# ---- mounts -------------------------------------------------------------------------

def mounts_under(path: str) -> list[str]:
    """Mount points (mountinfo order) whose path contains `path`."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if path in line.split()[4]]


def mounts_mentioning(path: str) -> list[str]:
    """Mount points of every mountinfo line that mentions `path` anywhere (mount point,
    root, source, options), deepest first: what to unmount, in that order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if path in line:
                out.append(line.split()[4].replace("\\040", " "))
    return sorted(out, key=len, reverse=True)


# ---- processes ----------------------------------------------------------------------

def procs_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every process (but us) whose command line contains `text`."""
    found = {}
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in cmd:
            found[int(name)] = cmd
    return found


def is_zombie(pid: int) -> bool:
    """Whether `pid` is a zombie, dead, or gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is our child (reaps it) or not (polls /proc); whether it
    went (a clean-up step: the caller decides what a survivor means)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return True
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}") or is_zombie(pid):
                return True
        time.sleep(0.05)
    return False


# ---- cgroups ------------------------------------------------------------------------

def cgroup_dirs(rel: str) -> list[str]:
    """Every cgroup directory at or below /sys/fs/cgroup/*/<rel>, deepest first."""
    out = []
    for hier in sorted(os.listdir(CGROUP_ROOT)):
        top = os.path.join(CGROUP_ROOT, hier, rel.strip("/"))
        if not os.path.isdir(top) or os.path.islink(os.path.join(CGROUP_ROOT, hier)):
            continue
        for dirpath, _dirs, _files in os.walk(top):
            out.append(dirpath)
    return sorted(set(out), key=len, reverse=True)


def cgroups_named(name: str) -> list[str]:
    """Directories (down to a depth of 7) under any cgroup hierarchy whose name contains
    `name`: a container's cgroups, wherever its runtime put them."""
    found = []
    for base in Path(CGROUP_ROOT).iterdir():
        if not base.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                if name in d:
                    found.append(os.path.join(dirpath, d))
            if dirpath.count("/") > 7:
                dirnames[:] = []
    return found


def rm_cgroups(rel: str) -> list[str]:
    """rmdir every cgroup under <rel> in every hierarchy; return those that stayed."""
    stuck = []
    for d in cgroup_dirs(rel):
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # a process that just exited may still be charged
        else:
            stuck.append(d)
    return stuck


# ---- a test's temp dir --------------------------------------------------------------

def leftovers(tmp: Path, ids: list[str]) -> list[str]:
    """What a runtime test left behind: mounts under its temp dir, processes rooted
    there, cgroups named after its containers, state entries."""
    out = []
    t = str(tmp)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if t in fields[4] or t in fields[3]:
                out.append(f"mount {fields[4]}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if root.startswith(t) or cwd.startswith(t):
            out.append(f"process {pid} (root {root})")
    for cid in ids:
        out += [f"cgroup {d}" for d in cgroups_named(cid)]
    state = tmp / "state"
    if state.is_dir():
        # seccomp-cache holds compiled filters shared by all containers, not state.
        out += [f"state entry {n}" for n in os.listdir(state) if n != "seccomp-cache"]
    return out


class HostPaths:
    """Host paths a daemon may create outside its temp dir: remember which existed,
    remove the ones that did not at the end."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.existed = {p for p in paths if os.path.lexists(p)}

    def cleanup(self) -> list[str]:
        removed = []
        for p in self.paths:
            if p in self.existed or not os.path.lexists(p):
                continue
            for m in mounts_mentioning(p):
                subprocess.run(["umount", "-l", m], capture_output=True)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except OSError:
                    pass
            removed.append(p)
        return removed
