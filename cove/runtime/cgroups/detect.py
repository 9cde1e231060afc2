"""Find the cgroup hierarchies of this host from /proc/self/mountinfo.

Everything here is a pure function of the texts it is given, so the unit tests
can describe any host (v1, v2, hybrid, combined mounts) without touching it.
"""

from __future__ import annotations

import os

from cove.runtime.cgroups import hybrid

# The v1 controllers the kernel knows; a v1 mount's super options name them
# among plain mount options (rw, clone_children, release_agent=...).
V1_CONTROLLERS = frozenset(
    (
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
        "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc", "debug",
    )
)


class Hierarchy:
    """One mounted hierarchy: where it is, which version, which controllers."""

    __slots__ = ("controllers", "mountpoint", "root", "version")

    def __init__(self, mountpoint: str, version: int, controllers: list[str], root: str = "/"):
        self.mountpoint = mountpoint
        self.version = version
        # v1: controllers from the mount options (plus "name=X" for named ones);
        # v2: the controllers this manager will use through this hierarchy.
        self.controllers = controllers
        # The mount's root within the hierarchy (not "/" inside cgroup namespaces).
        self.root = root

    def __repr__(self) -> str:
        return f"Hierarchy({self.mountpoint!r}, v{self.version}, {self.controllers!r})"


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space and so on)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, str, list[str]]]:
    """Return (fstype, root, mountpoint, super options) for each cgroup/cgroup2 mount."""
    found: list[tuple[str, str, str, list[str]]] = []
    for line in text.splitlines():
        if " - cgroup" not in line:
            continue
        left, _, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((tail[0], _unescape(fields[3]), _unescape(fields[4]), tail[2].split(",")))
    return found


def read_mountinfo() -> str:
    """The calling process's mountinfo text."""
    with open("/proc/self/mountinfo") as f:
        return f.read()


def _read_controllers(mountpoint: str) -> list[str]:
    try:
        with open(os.path.join(mountpoint, "cgroup.controllers")) as f:
            return f.read().split()
    except OSError:
        return []


def _v1_controllers(opts: list[str]) -> list[str]:
    return [o for o in opts if o in V1_CONTROLLERS or o.startswith("name=")]


def detect_layout(mountinfo: str | None = None) -> str:
    """Return "v1", "v2" or "hybrid" for the given (or this process's) mountinfo."""
    mounts = parse_mountinfo(read_mountinfo() if mountinfo is None else mountinfo)
    has_v2 = any(m[0] == "cgroup2" for m in mounts)
    # A name=systemd-only v1 mount next to a cgroup2 mount is still a v2 host
    # for resource control: no v1 controller is mounted.
    has_v1 = any(
        m[0] == "cgroup" and any(c in V1_CONTROLLERS for c in m[3]) for m in mounts
    )
    if has_v1 and has_v2:
        return "hybrid"
    if has_v1:
        return "v1"
    if has_v2:
        return "v2"
    if any(m[0] == "cgroup" for m in mounts):
        return "v1"
    raise _no_cgroups()


def _no_cgroups() -> Exception:
    from cove.errors import CoveError

    return CoveError("cgroups", "no cgroup filesystem is mounted (checked /proc/self/mountinfo)")


def find_hierarchies(
    mountinfo: str | None = None, *, v2_controllers: list[str] | None = None
) -> tuple[str, list[Hierarchy]]:
    """Return the layout and the hierarchies to manage, one per distinct v1 hierarchy.

    A v1 hierarchy mounted twice (a bind mount of a sub-cgroup, say) is taken
    once, preferring the mount of its root.  `v2_controllers` overrides the
    cgroup.controllers read from the cgroup2 mount (for tests).
    """
    text = read_mountinfo() if mountinfo is None else mountinfo
    layout = detect_layout(text)
    seen: dict[str, Hierarchy] = {}
    v2: Hierarchy | None = None
    for fstype, root, mountpoint, opts in parse_mountinfo(text):
        if fstype == "cgroup2":
            if layout == "v1" or (v2 is not None and (v2.root == "/" or root != "/")):
                continue
            v2 = Hierarchy(mountpoint, 2, [], root)
            continue
        ctrls = _v1_controllers(opts)
        if not ctrls:
            continue
        key = ",".join(sorted(ctrls))
        old = seen.get(key)
        if old is None or (old.root != "/" and root == "/"):
            seen[key] = Hierarchy(mountpoint, 1, ctrls, root)
    hierarchies = list(seen.values())
    if v2 is not None:
        avail = _read_controllers(v2.mountpoint) if v2_controllers is None else v2_controllers
        v2.controllers = hybrid.v2_share(hierarchies, avail)
        hierarchies.append(v2)
    if layout == "v2":
        # Named v1 hierarchies (name=systemd) carry no resources on a v2 host.
        hierarchies = [h for h in hierarchies if h.version == 2]
    return layout, hierarchies


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each controller of /proc/<pid>/cgroup to its path; "" keys the v2 entry."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            paths[""] = parts[2]
            continue
        for ctrl in parts[1].split(","):
            paths[ctrl] = parts[2]
    return paths
