"""Rootless networking: slirp4netns, as rootless podman's `--network slirp4netns`.

An ordinary user may not make bridges, veths or nftables rules, so a rootless container's
default network (`bridge`, or none named) is slirp4netns: the runtime makes the
container's network namespace inside its user namespace (so the container's root
administers it: binds port 80, sets up its interfaces), and a createRuntime hook
(`python -m ... rootless hook ROOT NAME`, run by cove-runtime once the namespaces exist
and before the container's program runs) attaches a slirp4netns process to it:

    slirp4netns --configure --mtu=65520 --enable-sandbox --enable-seccomp
                --disable-host-loopback [--api-socket slirp4netns.sock] --ready-fd=N PID tap0

which gives the container `tap0`, 10.0.2.100/24, a default route through 10.0.2.2 and a
DNS forwarder at 10.0.2.3, and carries its traffic out through ordinary sockets of the
caller's network namespace. `-p [IP:]HOST:CTR[/proto]` is slirp4netns's `add_hostfwd`
over its API socket: slirp4netns listens on IP (all addresses by default, as docker)
in the caller's namespace. `--disable-host-loopback` keeps the container from reaching
the caller's 127.0.0.1 through 10.0.2.2; `--network slirp4netns:allow_host_loopback=true`
allows it (podman's option, as `mtu=N`).

    <container>/slirp4netns.pid   "PID STARTTIME" of the container's slirp4netns
    <container>/slirp4netns.sock  its API socket (only with published ports)
    <container>/slirp4netns.log   its output
    <container>/hosts, resolv.conf   bind-mounted over /etc/hosts and /etc/resolv.conf

The process is one per container. The hook starts it in its own session and exits; the
monitor's clean-up (or the engine's teardown: `rm -f`, a failed start, `run -t`) stops
it through `detach`, which checks the pid's start time before it signals, and removes
the files. Nothing here touches another root's (or root's) networks: a rootless
`network create`/`rm` refuses or only drops a record (cove/engine/network.py).

The user namespace side (subordinate ids, unpacking layers as the container sees them)
is cove/image/userns.py, below the engine.
"""

from __future__ import annotations

import os
import sys

from cove.engine import netrecords, procs, state
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from cove.engine.container.record import Record

SLIRP = "slirp4netns"
GUEST_IP = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
PREFIX = 24
MTU = 65520
PID_FILE = "slirp4netns.pid"
API_SOCKET = "slirp4netns.sock"  # relative to the container's dir: sun_path is short
LOG_FILE = "slirp4netns.log"
READY_TIMEOUT = 10.0
_DIRS = ("/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin")


def rootless() -> bool:
    return os.geteuid() != 0


def is_slirp(mode: str) -> bool:
    return mode == SLIRP or mode.startswith(SLIRP + ":")


def binary() -> str:
    """slirp4netns's path, or "" when it is not installed."""
    return next((p for p in (os.path.join(d, SLIRP) for d in _DIRS)
                 if os.access(p, os.X_OK)), "")


def options(mode: str) -> dict[str, Any]:
    """`slirp4netns[:allow_host_loopback=true|false,mtu=N]` → its options."""
    out: dict[str, Any] = {"allow_host_loopback": False, "mtu": MTU}
    _, _, rest = mode.partition(":")
    for opt in filter(None, rest.split(",")):
        k, eq, v = opt.partition("=")
        if k == "allow_host_loopback" and eq and v in ("true", "false"):
            out[k] = v == "true"
        elif k == "mtu" and v.isdigit() and 68 <= int(v) <= 65521:
            out[k] = int(v)
        else:
            raise CoveError(f"--network {mode}", f"bad option {opt!r}: slirp4netns takes "
                            "allow_host_loopback=true|false and mtu=68..65521")
    return out


def network_mode(net: str) -> str:
    """The NetworkMode a container records for `--network net`. Rootless, the default
    network (`bridge`, or none named) is slirp4netns, and user (bridge) networks are
    refused: they would need root's bridges and nftables."""
    if is_slirp(net):
        options(net)
        if not binary():
            raise CoveError(f"--network {net}", "slirp4netns is not installed "
                            "(Debian: the slirp4netns package)")
        return net
    if net in ("default", "bridge"):
        return network_mode(SLIRP) if rootless() else "bridge"
    if rootless() and net not in ("none", "host"):
        raise CoveError(f"network {net}", refusal())
    return net


def refusal() -> str:
    return ("rootless: bridge networks need root; a rootless container's network is "
            "slirp4netns (the default), none or host")


# -- the spec ---------------------------------------------------------------------------

def spec_network(spec: dict[str, Any], paths: state.Paths, rec: Mapping[str, Any]) -> None:
    """A network namespace of the container's own, made by the runtime (`none`, or
    slirp4netns: then the hook that attaches it).
    Rootless, the namespace is made inside the container's user namespace, so /sys can
    be a sysfs of its own rather than the host's, bound."""
    lin = spec["linux"]
    if not any(n["type"] == "network" for n in lin["namespaces"]):
        lin["namespaces"].append({"type": "network"})
    if any(n["type"] == "user" for n in lin["namespaces"]):
        for m in spec["mounts"]:
            if m["destination"] == "/sys" and m["type"] != "sysfs":
                m.update(type="sysfs", source="sysfs",
                         options=["nosuid", "noexec", "nodev", "ro"])
    if not is_slirp(rec["HostConfig"]["NetworkMode"]):
        return
    from cove.engine import spawn
    argv = spawn.argv("rootless", "hook", paths.root, rec["Name"])
    spec.setdefault("hooks", {}).setdefault("createRuntime", []).append(
        {"path": argv[0], "args": argv, "env": ["PATH=/usr/local/bin:/usr/bin:/bin"]})
    # (its /etc/hosts and resolv.conf are bound by build_spec, as on a bridge network)


# -- attach, the hook, detach -----------------------------------------------------------

def attach(paths: state.Paths, name: str) -> bool:
    """network.attach's part for slirp4netns (before the runtime's create): /etc/hosts,
    resolv.conf and the published ports (a free one for `-p CTR`), recorded in
    NetworkSettings for the hook. False when the container's network is not ours."""
    cdir = paths.cdir(name)
    rec = state.load_record(cdir)
    if rec is None:
        return False
    mode = rec["HostConfig"]["NetworkMode"]
    if not is_slirp(mode):
        if rootless() and mode not in ("none", "host"):
            raise CoveError(f"network {mode}", refusal())
        return False
    detach(paths, name)  # what a killed run left
    hc = rec["HostConfig"]
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{GUEST_IP}\t{rec['Config']['Hostname']}"]
    for e in hc.get("ExtraHosts") or []:  # --add-host NAME:IP; host-gateway as podman's
        host, _, ip = e.partition(":")
        hosts.append(f"{GATEWAY if ip == 'host-gateway' else ip}\t{host}")
    _write(os.path.join(cdir, "hosts"), "\n".join(hosts) + "\n")
    _write(os.path.join(cdir, "resolv.conf"), _resolv_conf(hc))
    ports = netrecords.host_ports(paths, name, rec["HostConfig"]["PortBindings"])

    def note(r: Record) -> None:
        r["NetworkSettings"] = {
            "Networks": {SLIRP: {"IPAddress": GUEST_IP, "Gateway": GATEWAY,
                                 "IPPrefixLen": PREFIX, "MacAddress": "",
                                 "NetworkID": SLIRP}},
            "IPAddress": GUEST_IP, "Gateway": GATEWAY, "Ports": ports}
    state.update_record(cdir, note)
    return True


def _write(path: str, text: str) -> None:
    # in place, not renamed: the file may be bind-mounted into a container already
    with open(path, "a+") as f:
        f.truncate(0)
        f.write(text)


def _resolv_conf(hc: Mapping[str, Any]) -> str:
    """slirp4netns's DNS forwarder (or --dns), and the host's search domains and
    options (or --dns-search, --dns-option)."""
    host: list[str] = []
    try:
        with open("/etc/resolv.conf") as f:
            host = [x.rstrip("\n") for x in f]
    except OSError:
        pass
    lines = [f"nameserver {d}" for d in hc.get("Dns") or [DNS]]
    search, opts = hc.get("DnsSearch") or [], hc.get("DnsOptions") or []
    lines += [f"search {' '.join(search)}"] if search else \
        [x for x in host if x.startswith("search ")]
    lines += [f"options {' '.join(opts)}"] if opts else \
        [x for x in host if x.startswith("options ")]
    return "\n".join(lines) + "\n"


def hook(root: str, name: str, oci_state: dict[str, Any]) -> None:
    """The createRuntime hook: start the container's slirp4netns on the init's network
    namespace (`oci_state["pid"]`), wait until it has configured tap0, add the published
    ports. On failure nothing is left running."""
    paths = state.Paths(root)
    cdir = paths.cdir(name)
    rec = state.load_record(cdir, strict=True)
    if rec is None:
        raise CoveError(f"container {name}", "no such container")
    mode = rec["HostConfig"]["NetworkMode"]
    opts = options(mode)
    ports = (rec.get("NetworkSettings") or {}).get("Ports") or {}
    forwards = [(ctr, b) for ctr, bs in ports.items() for b in bs]
    _start(cdir, int(oci_state["pid"]), opts, api=bool(forwards))
    try:
        for ctr, b in forwards:
            _forward(cdir, ctr, b)
    except BaseException:
        detach(paths, name)
        raise


def _start(cdir: str, pid: int, opts: dict[str, Any], api: bool) -> None:
    import select
    import subprocess
    exe = binary()
    if not exe:
        raise CoveError(f"network {SLIRP}", "slirp4netns is not installed "
                        "(Debian: the slirp4netns package)")
    r, w = os.pipe()
    argv = [exe, "--configure", f"--mtu={opts['mtu']}", "--enable-seccomp",
            f"--ready-fd={w}"]
    if rootless():
        # Its sandbox is a mount namespace it pivots out of. Made inside the container's
        # user namespace, the host's shared mounts are slaves there; as root they would
        # stay shared, and its unmount of the old root would unmount them (a mount under
        # `ip netns`'s shared /run/netns, seen here) in the host's namespace too.
        argv.insert(3, "--enable-sandbox")
    if not opts["allow_host_loopback"]:
        argv.append("--disable-host-loopback")
    if api:
        argv += ["--api-socket", API_SOCKET]
    argv += [str(pid), "tap0"]
    log = os.open(os.path.join(cdir, LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                  | os.O_CLOEXEC, 0o600)
    try:
        # Its own session, our stdio not inherited: the runtime reads the hook's stderr
        # to its end, and a terminal's signals are not the network's.
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             pass_fds=(w,), cwd=cdir, start_new_session=True)
    except OSError as e:
        os.close(r)
        raise CoveError(f"network {SLIRP}", f"{exe}: {e.strerror}") from None
    finally:
        os.close(w)
        os.close(log)
    start = state.proc_start_time(p.pid)
    state.write_atomic(os.path.join(cdir, PID_FILE), f"{p.pid} {start}\n".encode())
    try:
        ready = select.select([r], [], [], READY_TIMEOUT)[0] and os.read(r, 16)
    finally:
        os.close(r)
    if not ready:
        why = _log_tail(cdir) if p.poll() is not None else \
            f"not ready after {READY_TIMEOUT:g}s"
        detach_dir(cdir)
        raise CoveError(f"network {SLIRP}", why or "it exited")


def _log_tail(cdir: str) -> str:
    """slirp4netns's complaint: its first line that is neither a warning nor the
    parent's "child failed(N)" (the child, in the namespaces, says what went wrong)."""
    try:
        with open(os.path.join(cdir, LOG_FILE), errors="replace") as f:
            lines = [x.strip() for x in f if x.strip() and not x.startswith("WARNING")]
    except OSError:
        return ""
    said = [x for x in lines if not x.startswith("child failed")]
    return (said or lines or [""])[0]


def _forward(cdir: str, ctr: str, b: dict[str, str]) -> None:
    """slirp4netns's add_hostfwd for one binding (in the caller's network namespace)."""
    import json
    import socket
    cport, proto = ctr.split("/")
    req = {"execute": "add_hostfwd",
           "arguments": {"proto": proto, "host_addr": b["HostIp"] or "0.0.0.0",
                         "host_port": int(b["HostPort"]), "guest_addr": GUEST_IP,
                         "guest_port": int(cport)}}
    what = f"-p {b['HostIp'] + ':' if b['HostIp'] not in ('', '0.0.0.0') else ''}" \
           f"{b['HostPort']}:{ctr}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        s.settimeout(10)
        os.chdir(cdir)
        s.connect(API_SOCKET)
        s.sendall(json.dumps(req).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        reply = json.loads(data or b"{}")
    except (OSError, ValueError) as e:
        raise CoveError(what, f"slirp4netns's API: {e}") from None
    finally:
        os.fchdir(old)
        os.close(old)
        s.close()
    if "error" in reply or "return" not in reply:
        desc = str((reply.get("error") or {}).get("desc") or reply)
        raise CoveError(what, _why_not(proto, b) or f"slirp4netns: {desc}")


def _why_not(proto: str, b: dict[str, str]) -> str:
    """Why slirp4netns could not listen, where a socket of ours says (it does not)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp"
                      else socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((b["HostIp"] or "0.0.0.0", int(b["HostPort"])))
    except OSError as e:
        return f"port is already in use ({e.strerror})" \
            if e.errno == 98 else f"cannot listen: {e.strerror}"
    finally:
        s.close()
    return ""


def detach(paths: state.Paths, name: str) -> bool:
    """network.detach's part: stop the container's slirp4netns and remove its files.
    True when nothing else is to be done (rootless: no bridge, veth or nft table was
    ever made; or the container's network is slirp4netns)."""
    cdir = paths.cdir(name)
    detach_dir(cdir)
    if rootless():
        return True
    rec: Mapping[str, Any] = state.load_record(cdir) or {}
    return is_slirp(str(rec.get("HostConfig", {}).get("NetworkMode", "")))


def detach_dir(cdir: str) -> None:
    try:
        with open(os.path.join(cdir, PID_FILE)) as f:
            parts = f.read().split()
        pid, start = int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        pid, start = 0, 0
    if pid > 0 and state.pid_alive(pid, start) and procs.comm(pid) == SLIRP:
        _stop(pid)
    for name in (PID_FILE, API_SOCKET, LOG_FILE):
        try:
            os.unlink(os.path.join(cdir, name))
        except FileNotFoundError:
            pass


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL after 2 s; waits for the exit (the process is not ours to
    reap: the monitor above it, a subreaper, or init does)."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        for sig, wait in ((15, 2.0), (9, 2.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if select.select([fd], [], [], wait)[0]:
                return
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """`hook ROOT NAME`, the container's state (OCI) on stdin."""
    from cove.oci import jsonio
    if len(argv) != 3 or argv[0] != "hook":
        print("usage: rootless hook ROOT NAME", file=sys.stderr)
        return 2
    try:
        oci_state = jsonio.loads(sys.stdin.buffer.read())
        hook(argv[1], argv[2], oci_state)
    except CoveError as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        from cove.errors import os_why
        print(f"network {SLIRP}: {os_why(e)}", file=sys.stderr)
        return 1
    return 0
