"""Opening a Manager: cgroupsPath resolution (absolute, relative, systemd form)."""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.runtime.cgroups.base import CGROUP_ROOT, Manager
from cove.runtime.cgroups.detect import find_hierarchies, parse_proc_cgroup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SYSTEMD_DIR = "/run/systemd/system"



def _expand_slice(sl: str) -> str:
    """systemd's "a-b.slice" to "/a.slice/a-b.slice"."""
    if sl in ("", "-.slice"):
        return ""
    if not sl.endswith(".slice") or "/" in sl:
        raise CoveError("cgroupsPath", f"invalid slice name {sl!r}")
    name = sl[: -len(".slice")]
    path = ""
    prefix = ""
    for part in name.split("-"):
        if not part:
            raise CoveError("cgroupsPath", f"invalid slice name {sl!r}")
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def _systemd_path(spec: str, container_id: str, systemd_dir: str) -> str:
    if not os.path.isdir(systemd_dir):
        raise CoveError("cgroupsPath", "systemd cgroup driver requested but systemd is not running")
    if not spec:
        spec = f"system.slice:cove:{container_id}"
    parts = spec.split(":")
    if len(parts) != 3:
        raise CoveError("cgroupsPath", f"expected slice:prefix:name for systemd, got {spec!r}")
    sl, prefix, name = parts
    unit = name if name.endswith(".slice") else (f"{prefix}-{name}.scope" if prefix else
                                                  f"{name}.scope")
    # Without --systemd-cgroup (runc's fs driver given a systemd-style path): the
    # directory systemd would have made, managed directly. With it, cgroups.systemd.
    return (_expand_slice(sl or "system.slice") or "") + "/" + unit


def open_manager(
    cgroups_path: str | None,
    container_id: str,
    *,
    rootless: bool = False,
    systemd: bool = False,
    root: str = CGROUP_ROOT,
    mountinfo: str | None = None,
    proc_cgroup: str | None = None,
    v2_controllers: list[str] | None = None,
    systemd_dir: str = SYSTEMD_DIR,
) -> Manager:
    """The manager for a container's cgroupsPath (nothing is created yet).

    Absolute paths are taken under each hierarchy's mount; relative ones under
    this process's own cgroup in that hierarchy; none means /cove/<id>.  The
    keyword arguments after `systemd` describe a fake host for tests.
    """
    spec = cgroups_path or ""
    if systemd:
        from cove.runtime.cgroups import systemd as sd  # only with --systemd-cgroup

        if not os.path.isdir(systemd_dir):
            raise CoveError("cgroupsPath", "systemd cgroup driver requested but systemd "
                            "is not running")
        return sd.open_manager(spec, container_id, rootless=rootless, root=root,
                               mountinfo=mountinfo, proc1_cgroup=proc_cgroup,
                               v2_controllers=v2_controllers)
    if (spec and not spec.startswith("/") and spec.count(":") == 2):
        spec = _systemd_path(spec, container_id, systemd_dir)
    default = not spec
    if default:
        spec = f"/cove/{container_id}"
    layout, hierarchies = find_hierarchies(mountinfo, v2_controllers=v2_controllers)
    if spec.startswith("/"):
        path = os.path.normpath(spec)
        path = "/" + path.lstrip("/")
        dirs = [_under(h.mountpoint, path) for h in hierarchies]
    else:
        rel = os.path.normpath(spec)
        if rel == ".." or rel.startswith("../"):
            raise CoveError("cgroupsPath", f"{spec!r} leaves the caller's cgroup")
        if proc_cgroup is None:
            with open("/proc/self/cgroup") as f:
                proc_cgroup = f.read()
        own = parse_proc_cgroup(proc_cgroup)
        dirs = []
        paths = []
        for h in hierarchies:
            mine = own.get("" if h.version == 2 else h.controllers[0], "/")
            # Inside a cgroup namespace, or a bind-mounted sub-tree, the mount
            # shows the hierarchy from h.root down.
            if h.root != "/" and (mine == h.root or mine.startswith(h.root + "/")):
                mine = mine[len(h.root):] or "/"
            full = os.path.join(mine, rel)
            paths.append(full)
            dirs.append(_under(h.mountpoint, full))
        path = paths[0] if paths else "/" + rel
    m = Manager(path, layout, hierarchies, dirs, root=root.rstrip("/") or "/",
                rootless=rootless)
    m.prune_parent = default
    return m


def _under(mountpoint: str, path: str) -> str:
    return mountpoint.rstrip("/") + path if path != "/" else mountpoint


def open_manager_from_state(d: dict[str, Any]) -> Manager:
    """Reopen the manager recorded by Manager.to_state() (kill, delete, pause...): the
    systemd driver's for a container made with --systemd-cgroup (imported only then)."""
    if d.get("systemd"):
        from cove.runtime.cgroups.systemd import SystemdManager

        return SystemdManager.from_state(d)
    return Manager.from_state(d)
