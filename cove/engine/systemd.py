"""`cove run --systemd=true|false|always`: what a container whose pid 1 is systemd needs,
as podman gives it (pkg/specgen/generate, libpod's setupSystemd), and nothing more.

- tmpfs on /run, /run/lock, /tmp and /var/log/journal (systemd mounts nothing there
  itself in a container: it has no CAP_SYS_ADMIN, and expects them to be there);
- `container=cove` in pid 1's environment (systemd's detect-virt reads it and writes
  it to /run/systemd/container) and `container_uuid`;
- an /etc/machine-id of its own (the container's ID, stable across restarts), bound
  from the container's directory;
- a writable cgroup for the container: on a v1 or hybrid host the container's own
  directory of the named `systemd` hierarchy, bound read-write over the read-only one
  (the cgroup namespace makes it the root systemd sees; the resource controllers stay
  read-only, so the container cannot lift its own limits); on a v2 host the container's
  cgroup (its namespace's root) read-write, a delegated subtree;
- STOPSIGNAL SIGRTMIN+3 (systemd's "halt"), unless another stop signal was asked for.
- /dev/console: the terminal with -t; without one a pty whose output cove-runtime
  relays into the container's log (annotation `io.cove.console=log`), so systemd's boot
  lines show in `cove logs` as they do in podman's.

`true` does this when the command is systemd or init
(/sbin/init, /usr/sbin/init, /usr/local/sbin/init, or any path ending in /systemd, as
podman decides); `always` whatever the command, once the image is seen to have systemd;
`false` (the default: docker has no such mode, and busybox's /sbin/init would be taken
for systemd) never. The host needs no systemd.
"""

from __future__ import annotations

import os
from typing import Any

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

MODES = ("true", "false", "always")
INIT_COMMANDS = ("/sbin/init", "/usr/sbin/init", "/usr/local/sbin/init")
SYSTEMD_BINARIES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
STOP_SIGNAL = "SIGRTMIN+3"
# (destination, mode, extra options): podman's four, each a tmpfs of its own
TMPFS: tuple[tuple[str, str, list[str]], ...] = (
    ("/run", "755", ["noexec"]), ("/run/lock", "1777", ["noexec"]), ("/tmp", "1777", []),
    ("/var/log/journal", "2755", ["noexec"]))


def parse_mode(v: str | bool | None) -> str:
    """The flag's value: true (also a bare --systemd), false or always."""
    if v is None or v is False:
        return "false"
    if v is True:
        return "true"
    s = str(v).strip().lower()
    if s in ("1", "yes", "on"):
        s = "true"
    if s in ("0", "no", "off", ""):
        s = "false"
    if s not in MODES:
        raise CoveError(f"--systemd {v}", "expected true, false or always")
    return s


def is_systemd_command(args: list[str]) -> bool:
    """podman's test: the command (or the one `/bin/sh -c` runs) is init or systemd."""
    cmd = args[2:] if len(args) > 2 and args[:2] == ["/bin/sh", "-c"] else args
    if not cmd:
        return False
    first = cmd[0].split()[0] if len(args) > 2 and args[:2] == ["/bin/sh", "-c"] \
        else cmd[0]
    return first in INIT_COMMANDS or os.path.basename(first) == "systemd"


def wanted(mode: str, args: list[str]) -> bool:
    return mode == "always" or (mode == "true" and is_systemd_command(args))


def _has_systemd(rootfs: str) -> bool:
    from cove.sys import libc
    dfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for b in SYSTEMD_BINARIES:
            try:
                fd = libc.openat2(dfd, b.lstrip("/"), os.O_PATH | os.O_CLOEXEC, 0,
                                  libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
            except OSError:
                continue
            os.close(fd)
            return True
    finally:
        os.close(dfd)
    return False


def _write_machine_id(rootfs: str, mid: str) -> None:
    """The container's own /etc/machine-id, written into its rootfs (its own layer):
    a file, not a bind mount, which systemd would take for a transient id and try to
    commit (systemd-machine-id-commit.service, failing on a read-only bind). Opened
    inside the rootfs (a symlink there can't lead out of it)."""
    from cove.sys import libc
    dfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = libc.openat2(dfd, "etc/machine-id", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                          | os.O_CLOEXEC | os.O_NOFOLLOW, 0o444,
                          libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        raise CoveError("--systemd", f"can't write the container's /etc/machine-id: "
                                     f"{e.strerror}") from None
    finally:
        os.close(dfd)
    with os.fdopen(fd, "w") as f:
        f.write(mid + "\n")


def _named_systemd_dir(cgroups_path: str, name: str) -> str | None:
    """The host directory of the container's cgroup in the named `systemd` hierarchy
    (the runtime makes it: /cove/<name> when the spec gives no cgroupsPath), or None
    where the host has no such hierarchy (v2)."""
    from cove.runtime.cgroups.detect import find_hierarchies, parse_proc_cgroup
    layout, hierarchies = find_hierarchies()
    if layout == "v2":
        return None
    h = next((h for h in hierarchies if h.version == 1
              and "name=systemd" in h.controllers), None)
    if h is None:
        return None
    path = cgroups_path or f"/cove/{name}"
    if not path.startswith("/"):
        with open("/proc/self/cgroup") as f:
            mine = parse_proc_cgroup(f.read()).get("name=systemd", "/")
        path = os.path.join(mine, path)
    path = os.path.normpath("/" + path.lstrip("/"))
    return h.mountpoint.rstrip("/") + path


def apply(root: str, spec: dict[str, Any], rec: Mapping[str, Any]) -> bool:
    """Make `spec` a systemd container's when the record's mode asks for it; returns
    whether it did. The record's stop signal becomes SIGRTMIN+3 (unless set)."""
    hc = rec["HostConfig"]
    mode = hc.get("Systemd") or "false"
    proc = spec["process"]
    if not wanted(mode, proc.get("args") or []):
        return False
    rootfs = spec["root"]["path"]
    if not _has_systemd(rootfs):
        raise CoveError(f"--systemd={mode}", "the image has no systemd ("
                        + " or ".join(SYSTEMD_BINARIES) + " not found)")
    mounts: list[dict[str, Any]] = spec["mounts"]
    own = {os.path.normpath(m["Destination"]) for m in rec.get("Mounts") or []
           if m.get("Destination")}
    for dst, mode_bits, extra in TMPFS:
        if dst in own:
            continue  # the user's own mount there wins, as podman
        mounts[:] = [m for m in mounts if os.path.normpath(m["destination"]) != dst]
        # before any mount inside it (a user's -v /tmp/x:/tmp/x), which it would hide
        # otherwise: parents mount first, as docker and podman order them
        at = next((i for i, m in enumerate(mounts)
                   if os.path.normpath(m["destination"]).startswith(dst + "/")), len(mounts))
        mounts.insert(at, {"destination": dst, "type": "tmpfs", "source": "tmpfs",
                           "options": ["rw", "rprivate", "nosuid", "nodev", *extra,
                                       f"mode={mode_bits}"]})
    env = [e for e in proc.get("env") or []
           if e.partition("=")[0] not in ("container", "container_uuid")]
    proc["env"] = [*env, "container=cove", f"container_uuid={rec['Id'][:32]}"]
    if "/etc/machine-id" not in own:
        _write_machine_id(rootfs, rec["Id"][:32])
    lin = spec.setdefault("linux", {})
    cg = next((m for m in mounts if m.get("type") == "cgroup"), None)
    named = _named_systemd_dir(lin.get("cgroupsPath") or "", rec["Name"])
    if cg is not None and named is not None:
        # v1/hybrid: only the named hierarchy writable (after the cgroup mount, which
        # makes the tree; the runtime made the directory before it mounts anything)
        mounts.append({"destination": "/sys/fs/cgroup/systemd", "type": "bind",
                       "source": named, "options": ["rbind", "rw", "nosuid", "nodev",
                                                    "noexec"]})
        # a hybrid host's cgroup2 mount (/sys/fs/cgroup/unified) hidden: seeing it,
        # systemd runs in hybrid mode and wants to make its cgroups there, read-only;
        # without it systemd keeps to the named hierarchy (legacy mode), as under
        # podman and runc, which mount only the v1 hierarchies
        masked = lin.setdefault("maskedPaths", [])
        if "/sys/fs/cgroup/unified" not in masked:
            masked.append("/sys/fs/cgroup/unified")
    elif cg is not None:
        cg["options"] = [o for o in cg.get("options") or [] if o != "ro"] + ["rw"]
    if not proc.get("terminal"):
        # /dev/console: without a terminal, a pty the runtime relays into the log
        # (cove/runtime/logconsole.py); with -t the runtime binds the terminal there
        spec.setdefault("annotations", {})["io.cove.console"] = "log"
    cfg = rec["Config"]
    if (cfg.get("StopSignal") or "SIGTERM").upper() in ("SIGTERM", "TERM", "15"):
        cfg["StopSignal"] = STOP_SIGNAL
    return True
