"""`cove run`'s flags beyond the basics, as docker's HostConfig has them: each parsed and
checked when the container is created (one line, before anything is made: a mistake in
a flag must never become a container that runs with something else) and kept in the
record under docker's name (`host_config`); cove/engine/hostspec.py applies them to the
container's OCI spec.

Here: --privileged, --ulimit, --sysctl, --systemd (cove/engine/systemd.py), --tmpfs
options, --shm-size, --ipc,
--pid, --uts, --init, --group-add, --cgroup-parent, the CPU and memory knobs, --label,
--expose, --add-host and --dns*; and how a failed exec of the command becomes docker's
exit status 126 or 127 (`exec_error`). The device flags (--device, CDI names,
--device-cgroup-rule, --annotation) are cove/engine/devflags.py's.
"""

from __future__ import annotations

import os
from typing import Any

from cove.engine.devflags import devices_and_cdi, parse_annotations, parse_device_cgroup_rule
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cove.engine.container.record import HostConfig
    from cove.engine.options import RunOptions

# -- --ulimit ---------------------------------------------------------------------------

# docker's names (`ulimit -a`'s resources) → setrlimit's
ULIMITS = {"core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
           "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
           "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
           "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
           "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING",
           "stack": "RLIMIT_STACK"}


def _limit(v: str, flag: str) -> int:
    if v in ("-1", "unlimited"):
        return -1
    if not (v.isascii() and v.isdigit()):
        raise CoveError(flag, f"invalid ulimit value {v!r} (a number, or -1 for unlimited)")
    return int(v)


def has_cap(bit: int) -> bool:
    """Whether this process holds capability `bit` in its effective set."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def parse_ulimits(specs: list[str]) -> list[dict[str, Any]]:
    """`--ulimit NAME=SOFT[:HARD]` (-1: unlimited) → docker's Ulimits. A hard limit above
    the one this process has can only be set with CAP_SYS_RESOURCE (the container's
    init inherits our limits and raises its own): without it the container would fail
    to start with an EPERM from deep inside the runtime, so it is refused here, saying
    why."""
    import resource

    from cove.sys.caps import CAPS
    out: dict[str, dict[str, Any]] = {}
    for s in specs:
        flag = f"--ulimit {s}"
        name, eq, val = s.partition("=")
        if not eq or name not in ULIMITS:
            raise CoveError(flag, "expected NAME=SOFT[:HARD] with NAME one of "
                                  + ", ".join(ULIMITS))
        soft_s, colon, hard_s = val.partition(":")
        soft = _limit(soft_s, flag)
        hard = _limit(hard_s, flag) if colon else soft
        if hard != -1 and (soft == -1 or soft > hard):
            raise CoveError(flag, f"ulimit soft limit must be less than or equal to hard "
                                  f"limit: {'unlimited' if soft == -1 else soft} > {hard}")
        cur = resource.getrlimit(getattr(resource, ULIMITS[name]))[1]
        want = resource.RLIM_INFINITY if hard == -1 else hard
        above = cur != resource.RLIM_INFINITY and (want == resource.RLIM_INFINITY
                                                   or want > cur)
        if above and not has_cap(CAPS["CAP_SYS_RESOURCE"]):
            raise CoveError(flag, f"hard limit {'unlimited' if hard == -1 else hard} is "
                                  f"above this host's {cur}, and raising a hard limit "
                                  f"needs CAP_SYS_RESOURCE, which cove does not have here "
                                  f"(ask for {cur} or less)")
        out[name] = {"Name": name, "Soft": soft, "Hard": hard}
    return list(out.values())


# -- --sysctl ---------------------------------------------------------------------------

# docker's list (opts.ValidateSysctl): the IPC namespace's kernel.* knobs; fs.mqueue.*
# (IPC too) and net.* (the network namespace) by prefix. Any other sysctl is the
# host's, whatever namespace the container has.
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def parse_sysctls(specs: list[str], network: str, ipc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in specs:
        k, eq, v = s.partition("=")
        flag = f"--sysctl {s}"
        if not eq or not k:
            raise CoveError(flag, "expected NAME=VALUE")
        if k in IPC_SYSCTLS or k.startswith("fs.mqueue."):
            if ipc == "host" or ipc.startswith("container:"):
                raise CoveError(flag, f"sysctl {k!r} is not allowed with --ipc {ipc}: it "
                                      "would change the host's (or that container's)")
        elif k.startswith("net."):
            if network == "host" or network.startswith("container:"):
                raise CoveError(flag, f"sysctl {k!r} is not allowed in the host network "
                                      "namespace")
        else:
            raise CoveError(flag, f"sysctl {k!r} is not allowed: only namespaced ones "
                                  f"({', '.join(IPC_SYSCTLS)}, fs.mqueue.*, net.*)")
        out[k] = v
    return out


# -- --tmpfs ----------------------------------------------------------------------------

_TMPFS_FLAGS = {"ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync",
                "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime",
                "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
                "private", "rprivate", "shared", "rshared", "slave", "rslave",
                "unbindable", "runbindable"}
_TMPFS_DATA = {"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"}
# mount flags that undo each other: the last one given wins
OPPOSITE = {"ro": "rw", "exec": "noexec", "suid": "nosuid", "dev": "nodev",
            "sync": "async", "mand": "nomand", "atime": "noatime",
            "diratime": "nodiratime", "relatime": "norelatime",
            "strictatime": "nostrictatime"}
OPPOSITE.update({v: k for k, v in list(OPPOSITE.items())})
# docker's defaults for a --tmpfs (then the user's options, merged)
TMPFS_DEFAULTS = ["noexec", "nosuid", "nodev"]


def parse_tmpfs(spec: str) -> tuple[str, list[str]]:
    """`--tmpfs /path[:OPTIONS]` → (path, the user's options, checked): options are
    kept, not dropped (`size=10m,mode=1777` must limit what it says)."""
    dst, _, opts = spec.partition(":")
    if not dst.startswith("/"):
        raise CoveError(f"--tmpfs {spec}", "the path must be absolute")
    out = []
    for o in filter(None, opts.split(",")):
        k, eq, v = o.partition("=")
        if (eq and k not in _TMPFS_DATA) or (not eq and k not in _TMPFS_FLAGS) \
                or (eq and not v):
            raise CoveError(f"--tmpfs {spec}", f"unknown tmpfs option {o!r}")
        if k == "size":
            from cove.engine.logs import parse_size
            try:
                parse_size(v)
            except CoveError:
                raise CoveError(f"--tmpfs {spec}", f"invalid size {v!r}") from None
        out.append(o)
    return dst, out


def parse_size_flag(flag: str, v: str | None) -> int:
    """A size flag's value (`--shm-size 128m`) in bytes; 0 when not given."""
    if not v:
        return 0
    from cove.engine.logs import parse_size
    try:
        return parse_size(v)
    except CoveError as e:
        raise CoveError(f"{flag} {v}", e.why) from None


# -- namespaces -------------------------------------------------------------------------

def parse_ns_mode(flag: str, v: str | None, allowed: tuple[str, ...]) -> str:
    """--ipc, --pid, --uts: one of `allowed` or (for those that take it) container:NAME."""
    v = v or ""
    if v in allowed or (v.startswith("container:") and v[10:] and "container:" in allowed):
        return v
    shown = [a if a != "container:" else "container:NAME" for a in allowed if a]
    raise CoveError(f"{flag} {v}", f"expected {', '.join(shown)}")


# -- the CPU and memory knobs ---------------------------------------------------------

def check_cpuset(v: str) -> str:
    """`--cpuset-cpus 0-1,3`: the list's syntax, and that this process may run on each
    CPU (docker: "Requested CPUs are not available")."""
    avail = os.sched_getaffinity(0)
    want: set[int] = set()
    for part in v.split(","):
        lo, dash, hi = part.partition("-")
        if not (lo.isascii() and lo.isdigit()) or (dash and not (hi.isascii() and hi.isdigit())):
            raise CoveError(f"--cpuset-cpus {v}", "expected a list such as 0-1,3")
        want.update(range(int(lo), int(hi if dash else lo) + 1))
    missing = sorted(want - avail)
    if missing:
        shown = ",".join(str(c) for c in sorted(avail))
        raise CoveError(f"--cpuset-cpus {v}", f"requested CPUs are not available - "
                                              f"requested {v}, available: {shown}")
    return v


def memory_knobs(memory: int, swap: str | None, reservation: str | None
                 ) -> tuple[int, int]:
    """(MemorySwap, MemoryReservation) in bytes, checked as docker checks them: swap is
    memory + swap, -1 unlimited, and needs --memory; the reservation is a soft limit
    below --memory."""
    sw = 0
    if swap:
        if swap == "-1":
            sw = -1
        else:
            sw = parse_size_flag("--memory-swap", swap)
        if not memory:
            raise CoveError(f"--memory-swap {swap}", "you should always set the memory "
                                                     "limit when using memoryswap limit")
        if sw != -1 and sw < memory:
            raise CoveError(f"--memory-swap {swap}", "minimum memoryswap limit should be "
                                                     "larger than memory limit")
    res = parse_size_flag("--memory-reservation", reservation)
    if res and memory and res > memory:
        raise CoveError(f"--memory-reservation {reservation}", "minimum memory limit can "
                        "not be less than memory reservation limit")
    return sw, res


# -- labels, exposed ports, hosts, DNS --------------------------------------------------

def parse_labels(labels: list[str], files: list[str]) -> dict[str, str]:
    """--label-file lines first, then --label K=V (or K: ""), as docker."""
    items: list[tuple[str, str]] = []
    for fn in files:
        try:
            with open(fn) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise CoveError(f"--label-file {fn}", e.strerror or str(e)) from None
        items += [(f"--label-file {fn}", ln.strip()) for ln in lines
                  if ln.strip() and not ln.strip().startswith("#")]
    items += [("--label", x) for x in labels]
    out: dict[str, str] = {}
    for flag, item in items:
        k, _, v = item.partition("=")
        if not k.strip():
            raise CoveError(f"{flag} {item!r}", "a label needs a name")
        out[k] = v
    return out


def parse_expose(specs: list[str]) -> list[str]:
    """`--expose PORT[-PORT][/tcp|udp]` → "PORT/proto" entries."""
    out = []
    for s in specs:
        body, _, proto = s.partition("/")
        proto = proto or "tcp"
        lo, dash, hi = body.partition("-")
        ok = proto in ("tcp", "udp") and lo.isascii() and lo.isdigit() \
            and (not dash or (hi.isascii() and hi.isdigit()))
        if not ok or not 1 <= int(lo) <= int(hi if dash else lo) <= 65535:
            raise CoveError(f"--expose {s}", "expected PORT[-PORT][/tcp|udp], ports in "
                                             "1-65535")
        out += [f"{p}/{proto}" for p in range(int(lo), int(hi if dash else lo) + 1)]
    return out


def parse_extra_hosts(specs: list[str]) -> list[str]:
    """`--add-host NAME:IP` (or NAME=IP; IP may be `host-gateway`) → docker's
    ExtraHosts, "NAME:IP"."""
    out = []
    for s in specs:
        name, eq, ip = s.partition("=")
        if not eq:
            name, _, ip = s.partition(":")
        ip = ip.strip("[]")
        if not name or not ip:
            raise CoveError(f"--add-host {s}", "expected NAME:IP (or NAME:host-gateway)")
        if ip != "host-gateway":
            import ipaddress
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise CoveError(f"--add-host {s}",
                                f"invalid IP address in add-host: {ip!r}") from None
        out.append(f"{name}:{ip}")
    return out


def check_dns(servers: list[str]) -> list[str]:
    if not servers:
        return servers
    import ipaddress
    for d in servers:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise CoveError(f"--dns {d}", "not an IP address") from None
    return servers


def own_etc(rec: Mapping[str, Any]) -> bool:
    """Whether the container gets the engine's /etc/hosts and /etc/resolv.conf: on a
    bridge network always; on none and host when a flag changes them."""
    hc = rec["HostConfig"]
    if hc["NetworkMode"] not in ("host", "none"):
        return True
    return bool(hc.get("ExtraHosts") or hc.get("Dns") or hc.get("DnsSearch")
                or hc.get("DnsOptions"))


# -- --init -----------------------------------------------------------------------------

INIT_PATH = "/sbin/docker-init"
# tini, docker's own docker-init: Debian's `tini` package ships a static build
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/"
                 "docker-init", "/usr/bin/tini")


def init_binary() -> str:
    for b in INIT_BINARIES:
        if os.access(b, os.X_OK):
            return b
    raise CoveError("--init", "no init binary found (install Debian's tini package)")


# -- the record's HostConfig -----------------------------------------------------------

def check_signal(sig: str) -> None:
    """A signal the runtime can send: a number 1-64 or a name (SIGTERM, TERM,
    RTMIN+3), as docker's `invalid signal` check."""
    import signal
    s = str(sig).upper()
    s = s[3:] if s.startswith("SIG") else s
    base, plus, n = s.partition("+")
    if s.isascii() and s.isdigit() and 1 <= int(s) <= 64:
        return
    if base in ("RTMIN", "RTMAX") and (not plus or (n.isdigit() and int(n) <= 30)):
        return
    if "SIG" + s not in signal.Signals.__members__:
        raise CoveError(f"--stop-signal {sig}", "invalid signal")


def host_config(o: RunOptions, net: str, mem: int) -> HostConfig:
    """The record's HostConfig for the flags this module handles, each checked."""
    ipc = parse_ns_mode("--ipc", o.ipc, ("", "private", "shareable", "none", "host",
                                         "container:"))
    pid = parse_ns_mode("--pid", o.pid, ("", "private", "host", "container:"))
    uts = parse_ns_mode("--uts", o.uts, ("", "private", "host"))
    if uts == "host" and o.hostname:
        raise CoveError("--hostname", "conflicting options: hostname and the UTS mode")
    if o.platform:
        from cove.oci.image import Platform
        try:
            Platform.from_string(o.platform)
        except (CoveError, ValueError):
            raise CoveError(f"--platform {o.platform}", "expected os/arch[/variant]") \
                from None
    if o.cpu_shares is not None and o.cpu_shares < 0:
        raise CoveError(f"--cpu-shares {o.cpu_shares}", "must be 0 or more")
    if o.stop_timeout is not None and o.stop_timeout < -1:
        raise CoveError(f"--stop-timeout {o.stop_timeout}", "must be -1 (no limit) or more")
    if o.cgroup_parent is not None and ".." in o.cgroup_parent.split("/"):
        raise CoveError(f"--cgroup-parent {o.cgroup_parent}", "may not contain '..'")
    if o.init:
        init_binary()
    swap, reservation = memory_knobs(mem, o.memory_swap, o.memory_reservation)
    devices, cdi_devices = devices_and_cdi(o)
    annotations = parse_annotations(o.annotations)
    from cove.engine.systemd import parse_mode
    systemd = parse_mode(o.systemd)
    if systemd != "false" and o.isolation in ("vm", "gvisor"):
        raise CoveError(f"--systemd={systemd}", f"not with --isolation {o.isolation}: "
                                                "systemd needs the host's cgroups")
    if "keep-groups" in o.group_add:  # podman's (crun's run.oci.keep_original_groups)
        if len(o.group_add) > 1:
            raise CoveError("--group-add keep-groups", "not with other --group-add values "
                                                       "(the caller's groups are kept as is)")
        if o.isolation in ("vm", "gvisor"):
            raise CoveError("--group-add keep-groups", f"not with --isolation {o.isolation}:"
                                                       " its process has no host groups")
    return {
        "CDIDevices": cdi_devices, "Systemd": systemd, "Annotations": annotations,
        "DeviceCgroupRules": [parse_device_cgroup_rule(r) for r in o.device_cgroup_rules],
        "Privileged": o.privileged, "PublishAllPorts": o.publish_all,
        "ExtraHosts": parse_extra_hosts(o.add_host), "Dns": check_dns(o.dns),
        "DnsSearch": o.dns_search, "DnsOptions": o.dns_option, "Init": o.init,
        "Ulimits": parse_ulimits(o.ulimits),
        "ShmSize": parse_size_flag("--shm-size", o.shm_size) or 64 << 20,
        "Sysctls": parse_sysctls(o.sysctls, net, ipc), "GroupAdd": o.group_add,
        "CpusetCpus": check_cpuset(o.cpuset_cpus) if o.cpuset_cpus else "",
        "CpuShares": o.cpu_shares or 0, "MemorySwap": swap,
        "MemoryReservation": reservation, "OomKillDisable": o.oom_kill_disable,
        "Devices": devices,
        "CgroupParent": o.cgroup_parent or "", "IpcMode": ipc or "private",
        "PidMode": pid, "UTSMode": uts,
        "Tmpfs": {d: ",".join(x) for d, x in map(parse_tmpfs, o.tmpfs)},
    }


def image_for_platform(st: Any, ref: str, digest: str, platform: str | None) -> Any:
    """The stored image `digest` for `platform` (an index's manifest for it), which
    must be that platform's (docker's check: an image of another platform would fail
    with an exec format error, or worse, run emulated without a word)."""
    if not platform:
        return st.image(digest)
    from cove.oci.image import Platform
    want = Platform.from_string(platform)
    img = st.image(digest, want)
    cfg = img.config
    got = Platform(cfg.os, cfg.architecture, cfg.variant or "")
    if (got.os, got.architecture) != (want.os, want.architecture) or \
            (want.variant and got.variant != want.variant):
        raise CoveError(f"image {ref}", f"was found but does not match the specified "
                                        f"platform: wanted {want}, actual: {got}")
    return img


# -- a command that cannot be run: docker's 126 and 127 ----------------------------------

def exec_error(e: CoveError) -> CoveError | None:
    """The runtime's report that the container's command cannot be executed (`exec:
    'X': ...`, made by cove-runtime create before anything runs) as docker words it and
    the exit status docker gives: 127 for a command that isn't there, 126 for one that
    can't be invoked (a directory, no permission). None for any other failure."""
    text = str(e)
    at = text.find("exec: '")
    if at < 0:
        return None
    rest = text[at + 7:]
    end = rest.find("': ")
    if end < 0:
        return None
    cmd, why = rest[:end], rest[end + 3:].strip()
    what = e.what if e.what.startswith("container ") else "run"
    if "not found in $PATH" in why:
        return CoveError(what, f'exec: "{cmd}": executable file not found in $PATH', 127)
    if "no such" in why:
        return CoveError(what, f'exec: "{cmd}": stat {cmd}: no such file or directory', 127)
    if "directory" in why:
        return CoveError(what, f'exec: "{cmd}": is a directory', 126)
    if "permission" in why:
        return CoveError(what, f'exec: "{cmd}": permission denied', 126)
    return None
