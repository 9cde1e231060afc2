"""The OCI spec of `cove run`'s docker flags: the HostConfig that
cove/engine/hostconfig.py parsed and checked, applied by `containers.build_spec`
(`apply`) to the spec of a container about to be created: rlimits, host devices
(--privileged, --device), tmpfs options, namespaces joined or left (--ipc, --pid,
--uts), /dev/shm, --init, --group-add, the cgroup knobs and --cgroup-parent."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from cove.engine import hostconfig
from cove.errors import CoveError

UNLIMITED = 2**64 - 1  # RLIM_INFINITY as the OCI spec writes it


def oci_rlimits(ulimits: list[dict[str, Any]], base: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """The spec's rlimits with the --ulimit ones replacing those of the same type."""
    mine = {hostconfig.ULIMITS[u["Name"]]: u for u in ulimits}
    out = [r for r in base if r["type"] not in mine]
    for typ, u in mine.items():
        out.append({"type": typ,
                    "soft": UNLIMITED if u["Soft"] == -1 else u["Soft"],
                    "hard": UNLIMITED if u["Hard"] == -1 else u["Hard"]})
    return out



def _node(path: str, ctr: str) -> tuple[dict[str, Any], str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        typ = "c"
    elif stat.S_ISBLK(st.st_mode):
        typ = "b"
    else:
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return ({"path": ctr, "type": typ, "major": major, "minor": minor,
             "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid},
            typ, major, minor)


# runc's libcontainer/devices.GetDevices skips these under /dev (docker's privileged)
_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices() -> list[dict[str, Any]]:
    """Every device node under the host's /dev, as OCI devices (--privileged)."""
    out = []
    for dirpath, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for f in sorted(files):
            if dirpath == "/dev" and f == "console":
                continue
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            n = _node(p, p)
            if n is not None:
                out.append(n[0])
    return out



def tmpfs_options(user: list[str], ro: bool = False) -> list[str]:
    """docker's defaults merged with the user's options (later wins: `exec` undoes the
    default `noexec`; the last `size=` counts); sizes in bytes, as the kernel reads k,
    m, g too but not docker's `b` or longer suffixes."""
    flags: dict[str, str] = {}
    for o in [*hostconfig.TMPFS_DEFAULTS, *(["ro"] if ro else []), *user]:
        k, eq, v = o.partition("=")
        if eq:
            if k == "size":
                from cove.engine.logs import parse_size
                v = str(parse_size(v))
            flags[k] = f"{k}={v}"
        else:
            flags.pop(hostconfig.OPPOSITE.get(k, ""), None)
            flags[k] = k
    return list(flags.values())



def _container_pid(root: str, flag: str, name: str) -> int:
    from cove.engine import state
    paths = state.Paths(root)
    try:
        rec = state.current_record(paths, state.lookup(paths, name))
    except CoveError:
        raise CoveError(flag, f"no such container: {name}") from None
    if rec["State"]["Status"] != "running" or not rec["State"].get("Pid"):
        raise CoveError(flag, f"container {name} is not running")
    return int(rec["State"]["Pid"])


def _set_ns(lin: dict[str, Any], typ: str, mode: str, root: str, flag: str) -> None:
    """Make the spec's `typ` namespace the host's (remove it), another container's (its
    path) or the container's own (as it is)."""
    if mode == "host":
        lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != typ]
    elif mode.startswith("container:"):
        pid = _container_pid(root, flag, mode[10:])
        for n in lin["namespaces"]:
            if n["type"] == typ:
                n["path"] = f"/proc/{pid}/ns/{typ if typ != 'network' else 'net'}"



def _devices_for(hc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(linux.devices, device cgroup rules) of --device."""
    devs, rules = [], []
    for d in hc.get("Devices") or []:
        n = _node(d["PathOnHost"], d["PathInContainer"])
        if n is None:
            raise CoveError(f"--device {d['PathOnHost']}", "not a device node any more")
        dev, typ, major, minor = n
        devs.append(dev)
        rules.append({"allow": True, "type": typ, "major": major, "minor": minor,
                      "access": d["CgroupPermissions"]})
    return devs, rules


def cgroup_rule(rule: str) -> dict[str, Any]:
    """A checked --device-cgroup-rule (`c 1:3 rwm`, `a *:* m`) as an OCI device rule."""
    typ, nums, access = rule.split()
    major, _, minor = nums.partition(":")
    out: dict[str, Any] = {"allow": True, "type": typ, "access": access}
    if major != "*":
        out["major"] = int(major)
    if minor != "*":
        out["minor"] = int(minor)
    return out


def apply(root: str, spec: dict[str, Any], rec: Mapping[str, Any]) -> None:
    """The HostConfig of these flags onto the spec (after the capabilities and seccomp
    profile are made: --privileged undoes them)."""
    hc = rec["HostConfig"]
    proc = spec["process"]
    lin = spec.setdefault("linux", {})
    res = lin.setdefault("resources", {})
    mounts: list[dict[str, Any]] = spec["mounts"]
    _devices(spec, hc)
    if hc.get("Ulimits"):
        proc["rlimits"] = oci_rlimits(hc["Ulimits"], proc.get("rlimits") or [])
    if hc.get("Sysctls"):
        lin["sysctl"] = {**(lin.get("sysctl") or {}), **hc["Sysctls"]}
    _groups(spec, hc)
    _resources(res, hc)
    if hc.get("CgroupParent"):
        lin["cgroupsPath"] = os.path.join(hc["CgroupParent"], rec["Id"])
    _ipc_pid_uts(root, spec, hc)
    if hc.get("Init"):
        mounts.append({"destination": hostconfig.INIT_PATH, "type": "bind",
                       "source": hostconfig.init_binary(),
                       "options": ["rbind", "ro", "nosuid", "nodev"]})
        proc["args"] = [hostconfig.INIT_PATH, "--", *proc["args"]]
    if hc.get("Systemd") not in (None, "false"):
        from cove.engine import systemd
        systemd.apply(root, spec, rec)  # (also the record's stop signal: SIGRTMIN+3)


def _devices(spec: dict[str, Any], hc: dict[str, Any]) -> None:
    """--privileged, --device, --device-cgroup-rule, --annotation and CDI devices."""
    proc = spec["process"]
    lin = spec.setdefault("linux", {})
    res = lin.setdefault("resources", {})
    mounts: list[dict[str, Any]] = spec["mounts"]
    if hc.get("Privileged"):
        # docker's: every capability, every host device (and the cgroup rule to use
        # them), no seccomp, no masked or read-only /proc paths, /sys and the cgroup
        # tree writable
        from cove.engine.options import apply_caps
        apply_caps(proc, ["ALL"], [])
        lin.pop("seccomp", None)
        proc["noNewPrivileges"] = False
        lin["maskedPaths"] = []
        lin["readonlyPaths"] = []
        for m in mounts:
            if m.get("type") in ("sysfs", "cgroup"):
                m["options"] = [o for o in m.get("options", []) if o != "ro"]
        lin["devices"] = host_devices()
        res["devices"] = [{"allow": True, "access": "rwm"}]
    devs, rules = _devices_for(hc)
    if devs:
        known = {d["path"] for d in lin.get("devices") or []}
        lin["devices"] = [*(lin.get("devices") or []),
                          *(d for d in devs if d["path"] not in known)]
        if not hc.get("Privileged"):
            res["devices"] = [*(res.get("devices") or []), *rules]
    if hc.get("DeviceCgroupRules") and not hc.get("Privileged"):
        res["devices"] = [*(res.get("devices") or []),
                          *map(cgroup_rule, hc["DeviceCgroupRules"])]
    if hc.get("Annotations"):
        spec["annotations"] = {**(spec.get("annotations") or {}), **hc["Annotations"]}
    cdi_names = list(hc.get("CDIDevices") or [])
    if any(k.startswith("cdi.k8s.io/") for k in spec.get("annotations") or {}):
        from cove.engine import cdi
        cdi_names += [n for n in cdi.names_from_annotations(spec["annotations"])
                      if n not in cdi_names]
    if cdi_names:
        from cove.engine import cdi
        cdi.apply(spec, cdi_names)


def _groups(spec: dict[str, Any], hc: dict[str, Any]) -> None:
    """--group-add: gids (or names from the image's /etc/group), or keep-groups."""
    proc = spec["process"]
    if hc.get("GroupAdd") == ["keep-groups"]:
        # no setgroups(2) in the runtime: the process keeps the caller's supplementary
        # groups (rootless: the user's host groups, seen as nogroup inside but granting
        # their access), as crun does for podman
        spec.setdefault("annotations", {})["run.oci.keep_original_groups"] = "1"
    elif hc.get("GroupAdd"):
        from cove.image.bundle import read_in_root
        groups = [ln.split(":") for ln in (read_in_root(spec["root"]["path"],
                                                        "/etc/group") or "").splitlines()]
        gids = list(proc["user"].get("additionalGids") or [])
        for g in hc["GroupAdd"]:
            if g.isascii() and g.isdigit():
                gid = int(g)
            else:
                hit = [e for e in groups if len(e) >= 3 and e[0] == g and e[2].isdigit()]
                if not hit:
                    raise CoveError(f"--group-add {g}", "no such group in the image's "
                                                        "/etc/group")
                gid = int(hit[0][2])
            if gid not in gids:
                gids.append(gid)
        proc["user"]["additionalGids"] = gids


def _resources(res: dict[str, Any], hc: dict[str, Any]) -> None:
    """The CPU and memory knobs beyond --cpus and --memory."""
    cpu = res.get("cpu") or {}
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpuShares"):
        cpu["shares"] = hc["CpuShares"]
    if cpu:
        res["cpu"] = cpu
    mem = res.get("memory") or {}
    if hc.get("MemorySwap"):
        mem["swap"] = hc["MemorySwap"]
    if hc.get("MemoryReservation"):
        mem["reservation"] = hc["MemoryReservation"]
    if hc.get("OomKillDisable"):
        mem["disableOOMKiller"] = True
    if mem:
        res["memory"] = mem


def _ipc_pid_uts(root: str, spec: dict[str, Any], hc: dict[str, Any]) -> None:
    """--ipc (and /dev/shm with it), --pid, --uts."""
    lin = spec.setdefault("linux", {})
    mounts: list[dict[str, Any]] = spec["mounts"]
    # /dev/shm: its size, none at all (--ipc none) or the host's (--ipc host), as
    # docker. With --ipc container:NAME the container joins NAME's IPC namespace (SysV
    # shared memory, semaphores, message queues, /dev/mqueue) but keeps a /dev/shm of
    # its own: NAME's is a mount in NAME's mount namespace, which the kernel does not
    # let another namespace bind (docker keeps each container's /dev/shm on the host)
    ipc = hc.get("IpcMode") or ""
    shm = next((m for m in mounts if m.get("destination") == "/dev/shm"), None)
    if shm is not None:
        if ipc == "none":
            mounts.remove(shm)
        elif ipc == "host":
            shm.update(type="bind", source="/dev/shm",
                       options=["rbind", "rw", "nosuid", "nodev"])
        elif hc.get("ShmSize"):
            shm["options"] = [o for o in shm.get("options", []) if not o.startswith("size=")] \
                + [f"size={hc['ShmSize']}"]
    _set_ns(lin, "ipc", ipc if ipc != "none" else "", root, "--ipc")
    _set_ns(lin, "pid", hc.get("PidMode") or "", root, "--pid")
    if hc.get("UTSMode") == "host":
        _set_ns(lin, "uts", "host", root, "--uts")
        spec.pop("hostname", None)  # the host's: not ours to set
