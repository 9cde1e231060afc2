"""What `cove run` and `cove create` take (RunOptions) and the parsing of its flags'
values as docker reads them: durations, restart policies, published ports, environment,
volumes, capabilities, signals. Pure functions, no engine state: the CLI, the Python
API (runargs) and the engine's record and spec building share them."""

from __future__ import annotations

from typing import Any

from cove.errors import CoveError
from cove.oci.record import field, record


@record
class RunOptions:
    """Everything `cove run` takes; the Python API builds one too."""
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    detach: bool = False
    rm: bool = False
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)       # -v SRC:DST[:ro]
    mounts: list[str] = field(default_factory=list)        # --mount type=...,source=,target=
    tmpfs: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)       # -p [IP:]HOST:CTR[/proto]
    network: str = "default"
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    user: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    read_only: bool = False
    isolation: str = ""  # "", container, gvisor or vm: cove-runtime's handler
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    restart: str = "no"
    health_cmd: str | None = None
    health_interval: float = 30.0
    health_timeout: float = 30.0
    health_retries: int = 3
    health_start_period: float = 0.0
    health_on_failure: str = "none"
    log_opts: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    stop_signal: str = "SIGTERM"
    # docker's further run flags (cove/engine/hostconfig.py checks and applies them)
    stop_timeout: int | None = None                         # seconds; default 10
    privileged: bool = False
    publish_all: bool = False                               # -P: every exposed port
    expose: list[str] = field(default_factory=list)        # PORT[-PORT][/proto]
    add_host: list[str] = field(default_factory=list)      # NAME:IP | NAME:host-gateway
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    init: bool = False                                      # tini as pid 1
    ulimits: list[str] = field(default_factory=list)       # NAME=SOFT[:HARD]
    labels: list[str] = field(default_factory=list)        # K=V
    label_files: list[str] = field(default_factory=list)
    shm_size: str | None = None
    sysctls: list[str] = field(default_factory=list)       # K=V, namespaced only
    platform: str | None = None                             # os/arch[/variant]
    group_add: list[str] = field(default_factory=list)
    cpuset_cpus: str | None = None
    cpu_shares: int | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    oom_kill_disable: bool = False
    devices: list[str] = field(default_factory=list)       # HOST[:CTR][:rwm] | CDI name
    device_cgroup_rules: list[str] = field(default_factory=list)  # "c 1:3 rwm"
    systemd: str = "false"                                  # true | false | always
    annotations: list[str] = field(default_factory=list)   # K=V onto the OCI config
    cgroup_parent: str | None = None
    ipc: str | None = None          # private, shareable, none, host, container:N
    pid: str | None = None                                  # host|container:N
    uts: str | None = None                                  # host
    cidfile: str | None = None                              # the ID written there at create
    detach_keys: str | None = None   # run -t in the foreground: docker's --detach-keys

def parse_duration(s: str | float) -> float:
    if isinstance(s, int | float):
        return float(s)
    v = s.strip()
    for suf, mul in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if v.endswith(suf) and _digits(v[:-len(suf)].replace(".", "", 1)):
            return float(v[:-len(suf)]) * mul
    try:
        return float(v)
    except ValueError:
        raise CoveError(f"duration {s!r}", "expected e.g. 500ms, 10s, 1m") from None


def _digits(s: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() and float() refuse
    (a ValueError that would leak past the one-line error)."""
    return s.isascii() and s.isdigit()


def parse_restart(s: str) -> dict[str, Any]:
    name, _, n = s.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise CoveError(f"--restart {s}", "expected no, on-failure[:N], always or unless-stopped")
    if n and (name != "on-failure" or not _digits(n)):
        raise CoveError(f"--restart {s}", "only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(n or 0)}


def parse_publish(specs: list[str]) -> dict[str, list[dict[str, str]]]:
    """`-p [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]` → docker's PortBindings. No host port
    (`-p 80`, `-p 127.0.0.1::80`, or 0) is HostPort "": the network picks a free one
    when the container starts, as docker. Ports and the address are checked here: a
    port out of range would otherwise surface as an OverflowError from bind()."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in specs:
        body, _, proto = p.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise CoveError(f"-p {p}", "protocol must be tcp or udp")
        parts = body.rsplit(":", 2)
        if len(parts) == 1:
            ip, host, ctr = "", "", parts[0]
        elif len(parts) == 2:
            ip, host, ctr = "", parts[0], parts[1]
        else:
            ip, host, ctr = parts
        if not _digits(ctr) or (host and not _digits(host)):
            raise CoveError(f"-p {p}", "expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
        if not 1 <= int(ctr) <= 65535:
            raise CoveError(f"-p {p}", f"container port {ctr} is not in 1-65535")
        if host and not 0 <= int(host) <= 65535:
            raise CoveError(f"-p {p}", f"host port {host} is not in 1-65535 (or 0: any)")
        if ip:
            import ipaddress
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise CoveError(f"-p {p}", f"{ip!r} is not an IPv4 address") from None
        hport = str(int(host)) if host and int(host) else ""
        out.setdefault(f"{int(ctr)}/{proto}", []).append({"HostIp": ip, "HostPort": hport})
    return out


def _check_env(e: str, what: str) -> None:
    """KEY=VALUE or KEY (the host's value): a KEY is required (execve refuses `=x`
    with a ValueError deep in the container's init) and NUL cannot pass execve."""
    if not e.partition("=")[0] or "\0" in e:
        raise CoveError(f"{what} {e!r}", "invalid environment variable: "
                        + ("no NUL allowed" if "\0" in e else "a name is required"))


def _env_files(files: list[str]) -> list[str]:
    out = []
    for fn in files:
        try:
            with open(fn) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise CoveError(f"--env-file {fn}", e.strerror or str(e)) from None
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                _check_env(line, f"--env-file {fn} line {i}")
                out.append(line)
    return out


def _cap(c: str, flag: str = "--cap-add") -> str:
    """A capability as the runtime names it (`chown`, `CHOWN`, `CAP_CHOWN`: CAP_CHOWN),
    or ALL; a name the running kernel does not know fails here, naming the flag, rather
    than in the runtime, naming a JSON path of a config the user never wrote."""
    from cove.sys.caps import CAPS, last_cap
    u = c.strip().upper()
    if u == "ALL":
        return u
    u = u if u.startswith("CAP_") else "CAP_" + u
    if u not in CAPS:
        raise CoveError(f"{flag} {c}", "unknown capability")
    if CAPS[u] > last_cap():
        raise CoveError(f"{flag} {c}", f"not known to the running kernel "
                                       f"(cap_last_cap {last_cap()})")
    return u


def _signal_name(sig: str | int) -> str:
    s = str(sig).upper()
    if s.isdigit():
        return s
    return s[3:] if s.startswith("SIG") else s

_PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
# docker's volume options, by kind: at most one of each kind
_VOLUME_OPTS = {"ro": "rw", "rw": "rw", "z": "label", "Z": "label", "nocopy": "copy",
                **dict.fromkeys(_PROPAGATIONS, "propagation")}


def parse_volume(v: str) -> tuple[str, str, bool, str]:
    """`-v [SRC:]DST[:OPTIONS]` → (source, destination, read-only, propagation).
    OPTIONS as docker's, comma-separated: ro or rw, z or Z (SELinux relabelling: no
    SELinux here, nothing to do), a propagation mode, nocopy (cove copies nothing into
    named volumes anyway). Anything else, or two of a kind, is an error: an ignored
    typo (`:r0`) would mount read-write what was meant read-only."""
    parts = v.split(":")
    if len(parts) > 3 or not all(parts):
        raise CoveError(f"-v {v}", "expected [SOURCE:]DESTINATION[:OPTIONS]")
    if len(parts) == 1:
        return "", parts[0], False, ""
    opts = parts[2].split(",") if len(parts) == 3 else []
    kinds: dict[str, str] = {}
    for opt in opts:
        kind = _VOLUME_OPTS.get(opt)
        if kind is None:
            raise CoveError(f"-v {v}", f"unknown volume option {opt!r} (expected ro, rw, z, "
                                       f"Z, nocopy or one of {', '.join(_PROPAGATIONS)})")
        if kind in kinds:
            raise CoveError(f"-v {v}", f"options {kinds[kind]} and {opt} conflict")
        kinds[kind] = opt
    return parts[0], parts[1], kinds.get("rw") == "ro", kinds.get("propagation", "")

# docker's (and podman's) default capabilities: runc's three (the runtime's `spec`, a
# starting point for hand-written bundles) leave root in a container unable to chown,
# mknod, open raw sockets (ping) or change users, which package managers need.
ENGINE_CAPS = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
               "CAP_FSETID", "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
               "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]


def apply_caps(proc: dict[str, Any], add: list[str], drop: list[str]) -> None:
    """Set the process's capabilities to ENGINE_CAPS with --cap-add/--cap-drop applied
    as docker combines them (moby's TweakCapabilities): `--cap-add ALL` is every
    capability the kernel knows less the drops; `--cap-drop ALL` keeps only the adds;
    otherwise the defaults less the drops plus the adds. Bounding, effective and
    permitted only, as docker: nothing inheritable or ambient, so a user other than
    root keeps none across execve."""
    from cove.sys import libc
    from cove.sys.caps import CAPS, last_cap
    adds = {_cap(c, "--cap-add") for c in add}
    drops = {_cap(c, "--cap-drop") for c in drop}
    if "ALL" in adds:
        # every capability the kernel knows that we can grant (our own bounding set:
        # an engine in a restricted sandbox cannot hand out what it lacks)
        base = {n for n, bit in CAPS.items() if bit <= last_cap()
                and libc.prctl(libc.PR_CAPBSET_READ, bit) == 1} - drops
    elif "ALL" in drops:
        base = adds
    else:
        base = (set(ENGINE_CAPS) - drops) | adds
    proc["capabilities"] = {k: sorted(base) for k in ("bounding", "effective", "permitted")}
