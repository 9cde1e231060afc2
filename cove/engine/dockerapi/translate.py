"""docker's container JSON both ways: a create body (Config + HostConfig +
NetworkingConfig) into the engine's RunOptions, and an engine record into docker's
inspect and list shapes. A field that would change what the container does and that
Cove can't honour is a 400 naming it, never a silent ignore."""

from __future__ import annotations

import time
from typing import Any

from cove.engine import state
from cove.engine.dockerapi.server import ApiError
from cove.engine.options import RunOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Healthcheck, Record

# HostConfig fields taken with their zero value only (anything else: 400)
_UNSUPPORTED_HOST = ("Links", "VolumesFrom", "CapabilityAdd", "BlkioWeight",
                     "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                     "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuRealtimePeriod",
                     "CpuRealtimeRuntime", "DeviceRequests", "KernelMemory",
                     "KernelMemoryTCP", "MemorySwappiness", "OomScoreAdj", "CgroupnsMode",
                     "Cgroup", "UsernsMode", "StorageOpt", "VolumeDriver", "Runtime",
                     "Isolation", "MaskedPaths", "ReadonlyPaths",
                     "DeviceCgroupRules", "IOMaximumIOps", "IOMaximumBandwidth",
                     "CpuCount", "CpuPercent", "CpusetMems", "CpuPeriod", "CpuQuota")
_UNSUPPORTED_CONFIG = ("MacAddress", "OnBuild", "Shell", "ArgsEscaped", "NetworkDisabled")


def _strs(where: str, v: object) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise ApiError(400, f"{where}: expected a list of strings")


def _num(where: str, v: object) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ApiError(400, f"{where}: expected a number")
    return int(v)


def _dur(v: object) -> float:
    """docker's nanoseconds, as seconds (0: the default)."""
    return _num("Healthcheck", v) / 1e9


def run_options(body: dict[str, Any], name: str | None) -> tuple[RunOptions, dict[str, Any]]:
    """RunOptions for a create body, and the extras the record keeps for inspect."""
    cfg = body
    hc = body.get("HostConfig") or {}
    if not isinstance(hc, dict):
        raise ApiError(400, "HostConfig: expected an object")
    image = cfg.get("Image")
    if not image or not isinstance(image, str):
        raise ApiError(400, "Config.Image: an image is required")
    _refuse_unsupported(cfg, hc)
    o = RunOptions(image=image)
    o.name = name
    ep = _config(o, cfg)
    _host_config(o, hc)
    aliases: dict[str, list[str]] = {}
    nc = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for net, ep_cfg in nc.items():
        aliases[net] = _strs("Aliases", (ep_cfg or {}).get("Aliases"))
    extras = {"Entrypoint": ep, "Cmd": cfg.get("Cmd"), "WorkingDir": cfg.get("WorkingDir") or "",
              "User": cfg.get("User") or "", "OpenStdin": bool(cfg.get("OpenStdin")),
              "StdinOnce": bool(cfg.get("StdinOnce")),
              "AttachStdin": bool(cfg.get("AttachStdin")),
              "AttachStdout": bool(cfg.get("AttachStdout")),
              "AttachStderr": bool(cfg.get("AttachStderr")), "Aliases": aliases}
    return o, extras


def _refuse_unsupported(cfg: dict[str, Any], hc: dict[str, Any]) -> None:
    """A create body that asks for what cove cannot do is refused, never half-honoured
    (the empty values docker clients send for "nothing" pass)."""
    for k in _UNSUPPORTED_HOST:
        if hc.get(k) not in (None, "", 0, [], {}, False):
            if k == "MemorySwappiness" and hc[k] == -1:
                continue
            if k == "Isolation" and hc[k] == "default":
                continue
            if k == "CgroupnsMode" and hc[k] == "private":
                continue
            if k in ("CpuPeriod", "CpuQuota"):
                continue   # with NanoCpus below when both are there
            raise ApiError(400, f"HostConfig.{k}: not supported by cove")
    for k in _UNSUPPORTED_CONFIG:
        if cfg.get(k) not in (None, "", [], {}, False):
            raise ApiError(400, f"Config.{k}: not supported by cove")


def _config(o: RunOptions, cfg: dict[str, Any]) -> Any:
    """The body's Config (process, labels, stop, healthcheck) into `o`; the Entrypoint
    as given (the record keeps it for inspect)."""
    cmd = _strs("Cmd", cfg.get("Cmd"))
    ep = cfg.get("Entrypoint")
    if ep is not None:
        eps = _strs("Entrypoint", ep)
        if not eps or eps == [""]:
            o.entrypoint = ""
        else:
            o.entrypoint = eps[0]
            cmd = [*eps[1:], *cmd]
    o.command = cmd
    o.env = _strs("Env", cfg.get("Env"))
    o.user = cfg.get("User") or None
    o.workdir = cfg.get("WorkingDir") or None
    o.hostname = cfg.get("Hostname") or None
    # a terminal: the monitor holds its master and serves attach (ttywatch.py)
    o.tty = bool(cfg.get("Tty"))
    o.interactive = bool(cfg.get("OpenStdin"))
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ApiError(400, "Labels: expected an object")
    o.labels = [f"{k}={v}" for k, v in labels.items()]
    o.expose = [p.replace("/tcp", "/tcp") for p in (cfg.get("ExposedPorts") or {})]
    if cfg.get("StopSignal"):
        o.stop_signal = str(cfg["StopSignal"])
    if cfg.get("StopTimeout") is not None:
        o.stop_timeout = _num("StopTimeout", cfg["StopTimeout"])
    h = cfg.get("Healthcheck")
    if isinstance(h, dict) and h.get("Test"):
        test = _strs("Healthcheck.Test", h["Test"])
        if test[0] == "NONE":
            pass
        elif test[0] == "CMD-SHELL":
            o.health_cmd = " ".join(test[1:])
        elif test[0] == "CMD":
            import shlex
            o.health_cmd = shlex.join(test[1:])
        else:
            raise ApiError(400, f"Healthcheck.Test: {test[0]!r}: expected CMD, CMD-SHELL "
                                "or NONE")
        o.health_interval = _dur(h.get("Interval")) or 30.0
        o.health_timeout = _dur(h.get("Timeout")) or 30.0
        o.health_retries = _num("Healthcheck.Retries", h.get("Retries")) or 3
        o.health_start_period = _dur(h.get("StartPeriod"))
    return ep


def _host_config(o: RunOptions, hc: dict[str, Any]) -> None:
    """HostConfig's mounts, ports, network, restart and resources into `o`."""
    o.volumes = _strs("HostConfig.Binds", hc.get("Binds"))
    for m in hc.get("Mounts") or []:
        o.mounts.append(_mount(m))
    for dst, opts in (hc.get("Tmpfs") or {}).items():
        o.tmpfs.append(f"{dst}:{opts}" if opts else dst)
    for port, binds in (hc.get("PortBindings") or {}).items():
        for b in binds or [{}]:
            ip, hp = (b or {}).get("HostIp") or "", (b or {}).get("HostPort") or ""
            o.publish.append(f"{ip}:{hp}:{port}" if ip else f"{hp}:{port}" if hp else port)
    mode = hc.get("NetworkMode") or "default"
    o.network = "bridge" if mode == "default" else mode
    if mode.startswith("container:"):
        raise ApiError(400, "HostConfig.NetworkMode: container:<name> is not supported by "
                            "cove")
    rp = hc.get("RestartPolicy") or {}
    pname = rp.get("Name") or "no"
    o.restart = f"{pname}:{rp['MaximumRetryCount']}" if pname == "on-failure" and \
        rp.get("MaximumRetryCount") else pname
    if hc.get("AutoRemove"):
        o.rm = o.detach = True
    mem = _num("HostConfig.Memory", hc.get("Memory"))
    o.memory = str(mem) if mem else None
    nano = _num("HostConfig.NanoCpus", hc.get("NanoCpus"))
    if not nano and hc.get("CpuQuota") and hc.get("CpuPeriod"):
        nano = int(hc["CpuQuota"] * 1e9 / hc["CpuPeriod"])
    o.cpus = nano / 1e9 if nano else None
    o.pids_limit = _num("HostConfig.PidsLimit", hc.get("PidsLimit")) or None
    if o.pids_limit is not None and o.pids_limit < 0:
        o.pids_limit = None
    _host_config_security(o, hc)


def _host_config_security(o: RunOptions, hc: dict[str, Any]) -> None:
    """HostConfig's privileges, DNS and hosts, kernel knobs, devices, namespaces and
    logging into `o`."""
    o.read_only = bool(hc.get("ReadonlyRootfs"))
    o.privileged = bool(hc.get("Privileged"))
    o.cap_add = _strs("CapAdd", hc.get("CapAdd"))
    o.cap_drop = _strs("CapDrop", hc.get("CapDrop"))
    o.security_opt = _strs("SecurityOpt", hc.get("SecurityOpt"))
    o.dns = _strs("Dns", hc.get("Dns"))
    o.dns_search = _strs("DnsSearch", hc.get("DnsSearch"))
    o.dns_option = _strs("DnsOptions", hc.get("DnsOptions"))
    o.add_host = _strs("ExtraHosts", hc.get("ExtraHosts"))
    o.init = bool(hc.get("Init"))
    o.publish_all = bool(hc.get("PublishAllPorts"))
    o.group_add = _strs("GroupAdd", hc.get("GroupAdd"))
    o.sysctls = [f"{k}={v}" for k, v in (hc.get("Sysctls") or {}).items()]
    o.ulimits = [f"{u['Name']}={u['Soft']}:{u['Hard']}" for u in hc.get("Ulimits") or []]
    shm = _num("ShmSize", hc.get("ShmSize"))
    o.shm_size = str(shm) if shm else None
    o.cpuset_cpus = hc.get("CpusetCpus") or None
    o.cpu_shares = _num("CpuShares", hc.get("CpuShares")) or None
    swap = _num("MemorySwap", hc.get("MemorySwap"))
    o.memory_swap = str(swap) if swap else None
    res = _num("MemoryReservation", hc.get("MemoryReservation"))
    o.memory_reservation = str(res) if res else None
    o.oom_kill_disable = bool(hc.get("OomKillDisable"))
    o.devices = [f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:"
                 f"{d.get('CgroupPermissions') or 'rwm'}" for d in hc.get("Devices") or []]
    o.cgroup_parent = hc.get("CgroupParent") or None
    o.ipc = hc.get("IpcMode") or None
    o.pid = hc.get("PidMode") or None
    o.uts = hc.get("UTSMode") or None
    lc = hc.get("LogConfig") or {}
    if lc.get("Type") not in (None, "", "json-file"):
        raise ApiError(400, f"HostConfig.LogConfig.Type: {lc['Type']!r}: cove logs to "
                            "json-file")
    o.log_opts = [f"{k}={v}" for k, v in (lc.get("Config") or {}).items()]


def _mount(m: dict[str, Any]) -> str:
    kind = m.get("Type") or "volume"
    parts = [f"type={kind}", f"target={m.get('Target', '')}"]
    if m.get("Source"):
        parts.append(f"source={m['Source']}")
    if m.get("ReadOnly"):
        parts.append("readonly")
    if kind == "tmpfs" and (m.get("TmpfsOptions") or {}).get("SizeBytes"):
        parts.append(f"tmpfs-size={m['TmpfsOptions']['SizeBytes']}")
    return ",".join(parts)


def _unix(ts: str) -> int:
    try:
        return int(state.parse_rfc3339(ts))
    except (ValueError, TypeError):
        return 0


def ports_list(rec: Record) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ports = (rec.get("NetworkSettings") or {}).get("Ports") or {}
    running = rec["State"]["Status"] in ("running", "paused")
    for key in rec["Config"].get("ExposedPorts") or {}:
        num, _, proto = key.partition("/")
        binds = ports.get(key) if running else None
        if binds:
            for b in binds:
                out.append({"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(num),
                            "PublicPort": int(b.get("HostPort") or 0),
                            "Type": proto or "tcp"})
        else:
            out.append({"PrivatePort": int(num), "Type": proto or "tcp"})
    return out


def _networks(rec: Record) -> dict[str, Any]:
    api = rec.get("Api") or {}
    nets = dict((rec.get("NetworkSettings") or {}).get("Networks") or {})
    out = {}
    for n, ep in nets.items():
        aliases = [*api.get("Aliases", {}).get(n, []), rec["Id"][:12]]
        out[n] = {"IPAMConfig": None, "Links": None, "Aliases": aliases,
                  "NetworkID": ep.get("NetworkID", ""), "EndpointID": ep.get("NetworkID", ""),
                  "Gateway": ep.get("Gateway", ""), "IPAddress": ep.get("IPAddress", ""),
                  "IPPrefixLen": ep.get("IPPrefixLen", 0), "IPv6Gateway": "",
                  "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                  "MacAddress": ep.get("MacAddress", ""), "DriverOpts": None}
    mode = rec["HostConfig"].get("NetworkMode")
    if not out and mode in ("host", "none"):
        out[mode] = {"Aliases": None, "NetworkID": mode, "EndpointID": "", "Gateway": "",
                     "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}
    return out


def _state(rec: Record) -> dict[str, Any]:
    st = rec["State"]
    status = st["Status"]
    out = {"Status": status, "Running": status in ("running", "paused"),
           "Paused": status == "paused", "Restarting": status == "restarting",
           "OOMKilled": bool(st.get("OOMKilled")), "Dead": status == "dead",
           "Pid": int(st.get("Pid") or 0), "ExitCode": int(st.get("ExitCode") or 0),
           "Error": st.get("Error") or "", "StartedAt": st.get("StartedAt"),
           "FinishedAt": st.get("FinishedAt")}
    if st.get("Health"):
        out["Health"] = st["Health"]
    return out


def inspect_doc(rec: Record) -> dict[str, Any]:
    """docker's `GET /containers/{id}/json` from an engine record."""
    api = rec.get("Api") or {}
    cfg = rec["Config"]
    hc = dict(rec["HostConfig"])
    hc.setdefault("Binds", api.get("Binds"))
    hc.setdefault("Links", None)
    hc.setdefault("VolumesFrom", None)
    hc.setdefault("AutoRemove", False)
    net = _networks(rec)
    first: dict[str, Any] = next(iter(net.values()), {})
    mounts = [{"Type": m.get("Type"), "Name": m.get("Name", ""), "Source": m.get("Source"),
               "Destination": m.get("Destination"), "Driver": "local" if m.get(
                   "Type") == "volume" else "", "Mode": "" if m.get("RW", True) else "ro",
               "RW": m.get("RW", True), "Propagation": m.get("Propagation", "")}
              for m in rec.get("Mounts") or []]
    return {
        "Id": rec["Id"], "Created": rec["Created"], "Path": rec.get("Path", ""),
        "Args": rec.get("Args", []), "State": _state(rec),
        "Image": rec.get("ImageDigest", ""), "ResolvConfPath": "", "HostnamePath": "",
        "HostsPath": "", "LogPath": rec.get("LogPath", ""), "Name": "/" + rec["Name"],
        "RestartCount": int(rec.get("RestartCount") or 0), "Driver": "overlay",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None, "HostConfig": hc,
        "GraphDriver": {"Name": "overlay", "Data": None}, "Mounts": mounts,
        "Config": {"Hostname": cfg.get("Hostname", ""), "Domainname": "",
                   "User": api.get("User", ""), "AttachStdin": api.get("AttachStdin", False),
                   "AttachStdout": api.get("AttachStdout", False),
                   "AttachStderr": api.get("AttachStderr", False),
                   "ExposedPorts": cfg.get("ExposedPorts") or None,
                   "Tty": bool(cfg.get("Tty")),
                   "OpenStdin": bool(cfg.get("OpenStdin") or api.get("OpenStdin")),
                   "StdinOnce": api.get("StdinOnce", False), "Env": cfg.get("Env") or [],
                   "Cmd": api.get("Cmd", cfg.get("Cmd")) or None,
                   "Healthcheck": _health_cfg(cfg.get("Healthcheck")),
                   "Image": rec.get("Image", ""), "Volumes": cfg.get("Volumes"),
                   "WorkingDir": api.get("WorkingDir", ""),
                   "Entrypoint": api.get("Entrypoint"), "OnBuild": None,
                   "Labels": cfg.get("Labels") or {},
                   "StopSignal": cfg.get("StopSignal") or "SIGTERM",
                   **({"StopTimeout": cfg["StopTimeout"]}
                      if cfg.get("StopTimeout") is not None else {})},
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": (rec.get("NetworkSettings") or {}).get("Ports") or {},
            "SandboxKey": "", "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
            "EndpointID": first.get("EndpointID", ""), "Gateway": first.get("Gateway", ""),
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": first.get("IPAddress", ""),
            "IPPrefixLen": first.get("IPPrefixLen", 0), "IPv6Gateway": "",
            "MacAddress": first.get("MacAddress", ""), "Networks": net},
    }


def _health_cfg(h: Healthcheck | None) -> dict[str, Any] | None:
    if not h:
        return None
    return {"Test": h["Test"], "Interval": int(h["Interval"] * 1e9),
            "Timeout": int(h["Timeout"] * 1e9), "Retries": h["Retries"],
            "StartPeriod": int(h.get("StartPeriod", 0) * 1e9)}


def status_text(rec: Record) -> str:
    """docker ps's STATUS column ("Up 3 seconds", "Exited (0) 2 minutes ago")."""
    from cove.engine import containers
    st = rec["State"]
    line = containers.status_line(rec)
    if st["Status"] == "exited":
        ago = _ago(time.time() - _unix(st.get("FinishedAt", "")))
        return f"Exited ({st['ExitCode']}) {ago} ago"
    health = st.get("Health")
    if st["Status"] == "running" and health:
        return f"{line} ({health.get('Status')})"
    return line


def _ago(s: float) -> str:
    s = max(0, int(s))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if s < 3600:
        return f"{s // 60} minutes"
    return f"{s // 3600} hours"


def list_doc(rec: Record) -> dict[str, Any]:
    """One entry of `GET /containers/json`."""
    cmd = [rec.get("Path", ""), *rec.get("Args", [])]
    return {"Id": rec["Id"], "Names": ["/" + rec["Name"]], "Image": rec.get("Image", ""),
            "ImageID": rec.get("ImageDigest", ""), "Command": " ".join(c for c in cmd if c),
            "Created": _unix(rec["Created"]), "Ports": ports_list(rec),
            "Labels": rec["Config"].get("Labels") or {}, "State": rec["State"]["Status"],
            "Status": status_text(rec),
            "HostConfig": {"NetworkMode": rec["HostConfig"].get("NetworkMode", "default")},
            "NetworkSettings": {"Networks": _networks(rec)},
            "Mounts": inspect_doc(rec)["Mounts"]}


def rfc3339_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


