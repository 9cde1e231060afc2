"""The keywords of the Python API's `run`/`create` → the engine's `RunOptions`.

The API takes docker-py's names and shapes (`environment={...}`, `volumes={src: {"bind":
..., "mode": "ro"}}`, `ports={"80/tcp": 8080}`, `mem_limit="512m"`, `restart_policy={...}`,
a string command split as a shell would) and cove's own names (`env`, `publish`,
`memory`, `restart`, `workdir`, `rm`, `health_cmd`, ...: the `cove run` flags). A value
is either translated to what it means for docker, or refused with a TypeError naming
the keyword: code written for docker-py must never get a different meaning in silence.
docker-py keywords the engine cannot honour are accepted only with an empty value
(None, False, 0, "", [], {}), which asks for nothing.

Nothing here makes anything: `translate` only reads its arguments; the engine checks
the values it parses itself (sizes, volume options, capabilities, ...) when it creates.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cove.engine.options import RunOptions, parse_duration

# docker-py keywords (containers.run/create) the engine has no way to honour
UNSUPPORTED = frozenset({
    "blkio_weight_device", "blkio_weight", "cgroup_parent", "cgroupns", "cpu_count",
    "cpu_percent", "cpu_shares", "cpuset_cpus", "cpuset_mems", "cpu_rt_period",
    "cpu_rt_runtime", "device_cgroup_rules", "device_read_bps", "device_read_iops",
    "device_write_bps", "device_write_iops", "devices", "device_requests", "dns_opt",
    "dns_search", "dns", "domainname", "extra_hosts", "group_add", "init", "init_path",
    "ipc_mode", "kernel_memory", "links", "lxc_conf", "mac_address", "mem_reservation",
    "mem_swappiness", "memswap_limit", "networking_config", "oom_kill_disable",
    "oom_score_adj", "pid_mode", "platform", "privileged", "publish_all_ports",
    "shm_size", "storage_opt", "sysctls", "ulimits", "userns_mode", "uts_mode",
    "volume_driver", "volumes_from", "runtime", "stop_timeout",
})
# docker-py keywords with no effect here: `version` is the HTTP API's, and cove has no
# proxy configuration for `use_config_proxy` to copy in
IGNORED = frozenset({"version", "use_config_proxy"})
# cove's own names for what docker-py spells otherwise; both at once is refused
ALIASES = {"env": "environment", "publish": "ports", "memory": "mem_limit",
           "workdir": "working_dir", "restart": "restart_policy", "rm": "remove",
           "interactive": "stdin_open"}
RUN_ONLY = frozenset({"stdout", "stderr", "stream", "remove", "rm"})
_COVE = frozenset({"env_files", "cpus", "isolation", "health_cmd", "health_interval",
                   "health_timeout", "health_retries", "health_start_period",
                   "health_on_failure", "log_opts"})
_DOCKER = frozenset({
    "detach", "entrypoint", "environment", "healthcheck", "hostname", "labels",
    "name", "network_disabled", "stdin_open", "stop_signal", "tty", "user", "working_dir",
    "auto_remove", "cap_add", "cap_drop", "cpu_period", "cpu_quota", "isolation",
    "log_config", "mem_limit", "mounts", "nano_cpus", "network_mode", "pids_limit",
    "read_only", "restart_policy", "security_opt", "tmpfs", "ports", "volumes", "network",
})
KNOWN = _DOCKER | _COVE | UNSUPPORTED | IGNORED | set(ALIASES) | RUN_ONLY


@dataclass
class Plan:
    """What a `run`/`create` call asks for: the engine's options and what the API does
    around them (labels go into the record; `remove` without `detach` is the API's)."""
    options: RunOptions
    labels: dict[str, str] = field(default_factory=dict)
    remove: bool = False       # the API removes it after the wait (run, not detached)
    detach: bool = False
    stdout: bool = True
    stderr: bool = False
    stream: bool = False


def _fail(call: str, key: str, why: str) -> TypeError:
    return TypeError(f"{call}(): {key}: {why}")


def _str(call: str, key: str, v: object) -> str:
    if not isinstance(v, str):
        raise _fail(call, key, f"expected a str, got {type(v).__name__}")
    return v


def _strs(call: str, key: str, v: object) -> list[str]:
    """A list of strings; one string is a list of one (its meaning is plain: a string
    is never taken character by character)."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    raise _fail(call, key, f"expected a list of str, got {v!r}")


def _bool(call: str, key: str, v: object) -> bool:
    """True or False (None is False); not any truthy value: `detach="no"` is an error."""
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _fail(call, key, f"expected True or False, got {v!r}")
    return v


def command(call: str, key: str, v: object) -> list[str]:
    """docker-py's rule: a string is split as a POSIX shell splits words (shlex), a list
    is the argv as it is; None is the image's default."""
    if v is None:
        return []
    if isinstance(v, str):
        try:
            return shlex.split(v)
        except ValueError as e:
            raise _fail(call, key, f"cannot split {v!r}: {e}") from None
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    raise _fail(call, key, f"expected a str or a list of str, got {v!r}")


def environment(call: str, key: str, v: object) -> list[str]:
    """A dict {"K": "V"} (values formatted as docker-py does: str(v); None gives a bare
    "K", which takes this process's value, as `cove run -e K`) or a list of "K=V"."""
    if v is None:
        return []
    if isinstance(v, Mapping):
        out = []
        for k, val in v.items():
            if not isinstance(k, str) or not k or "=" in k:
                raise _fail(call, key, f"bad variable name {k!r}")
            if isinstance(val, bytes):
                val = val.decode()
            out.append(k if val is None else f"{k}={val}")
        return out
    items = _strs(call, key, v)
    for e in items:
        if not e or e.startswith("="):
            raise _fail(call, key, f"expected K=V, got {e!r}")
    return items


def labels(call: str, v: object) -> dict[str, str]:
    """A dict {str: str}, or a list of names (each with the value "")."""
    if v is None:
        return {}
    if isinstance(v, Mapping):
        if not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise _fail(call, "labels", "expected a dict of str to str")
        return dict(v)
    return dict.fromkeys(_strs(call, "labels", v), "")


def volumes(call: str, v: object) -> list[str]:
    """docker-py's dict {host_path_or_name: {"bind": "/dst", "mode": "ro"}} (or
    {"bind": ..., "ro": True}, a "propagation", or a plain "/dst"), or a list of
    "src:dst[:mode]" (or "/dst": an anonymous volume) → cove's -v specs, whose options
    the engine checks as docker's (ro, rw, z, Z, nocopy, a propagation)."""
    if v is None:
        return []
    if not isinstance(v, Mapping):
        return _strs(call, "volumes", v)
    out = []
    for src, spec in v.items():
        if isinstance(src, bytes):
            src = src.decode()
        if not isinstance(src, str) or not src or ":" in src:
            raise _fail(call, "volumes", f"bad source {src!r}")
        if isinstance(spec, str):
            spec = {"bind": spec}
        if not isinstance(spec, Mapping) or not isinstance(spec.get("bind"), str):
            raise _fail(call, "volumes", f"{src!r}: expected {{'bind': '/path', "
                                         f"'mode': 'ro'|'rw'}}, got {spec!r}")
        extra = set(spec) - {"bind", "mode", "ro", "propagation"}
        if extra:
            raise _fail(call, "volumes", f"{src!r}: cove does not take {sorted(extra)}")
        if "ro" in spec and "mode" in spec:
            raise _fail(call, "volumes", f"{src!r}: both 'ro' and 'mode'")
        mode = ("ro" if spec["ro"] else "rw") if "ro" in spec else \
            _str(call, "volumes", spec.get("mode") or "rw")
        if spec.get("propagation"):
            mode += "," + _str(call, "volumes", spec["propagation"])
        if ":" in spec["bind"] or ":" in mode:
            raise _fail(call, "volumes", f"{src!r}: bad bind {spec!r}")
        out.append(f"{src}:{spec['bind']}:{mode}")
    return out


def mounts(call: str, v: object) -> list[str]:
    """cove's "type=...,source=...,target=..." strings, or docker-py's `Mount`s (dicts
    with Type, Source, Target, ReadOnly; options beyond those are refused)."""
    if v is None:
        return []
    if isinstance(v, str | Mapping):
        v = [v]
    if not isinstance(v, list | tuple):
        raise _fail(call, "mounts", f"expected a list of mounts, got {v!r}")
    out = []
    for m in v:
        if isinstance(m, str):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise _fail(call, "mounts", f"expected a str or a docker Mount, got {m!r}")
        extra = [k for k, x in m.items()
                 if k not in ("Type", "Source", "Target", "ReadOnly") and x]
        if extra:
            raise _fail(call, "mounts", f"cove does not take {extra}")
        kind = m.get("Type") or "volume"
        if kind not in ("bind", "volume", "tmpfs"):
            raise _fail(call, "mounts", f"type {kind!r}: expected bind, volume or tmpfs")
        src, dst = str(m.get("Source") or ""), str(m.get("Target") or "")
        if "," in src or "," in dst or "=" in src or "=" in dst:
            raise _fail(call, "mounts", f"{src!r} → {dst!r}: paths with ',' or '='")
        spec = f"type={kind},source={src},target={dst}" if src else \
            f"type={kind},target={dst}"
        out.append(spec + (",readonly" if m.get("ReadOnly") else ""))
    return out


def tmpfs(call: str, v: object) -> list[str]:
    """A dict {"/path": "options"} or a list of "/path[:options]"; the engine mounts
    tmpfs with its own options, so options are refused rather than dropped."""
    if v is None:
        return []
    items = [f"{k}:{o}" if o else str(k) for k, o in v.items()] if isinstance(v, Mapping) \
        else _strs(call, "tmpfs", v)
    out = []
    for item in items:
        path, _, opts = item.partition(":")
        if opts:
            raise _fail(call, "tmpfs", f"{item!r}: cove takes no tmpfs options yet")
        out.append(path)
    return out


def ports(call: str, v: object) -> list[str]:
    """docker-py's dict {"80/tcp": 8080 | "8080" | ("127.0.0.1", 8080) | ("127.0.0.1",)
    | None | [one of those, ...]} → cove's -p specs. None (or no port) is a random host
    port, as docker: the engine picks a free one when the container starts, and it
    shows in the container's `ports`."""
    if v is None:
        return []
    if not isinstance(v, Mapping):
        raise _fail(call, "ports", f"expected a dict like {{'80/tcp': 8080}}, got {v!r}")
    out = []
    for k, binds in v.items():
        ctr, _, proto = str(k).partition("/")
        proto = proto or "tcp"
        if not ctr.isdigit() or proto not in ("tcp", "udp"):
            raise _fail(call, "ports", f"{k!r}: expected PORT or PORT/tcp|udp")
        for b in binds if isinstance(binds, list) else [binds]:
            ip, host = "", None
            if isinstance(b, tuple) and len(b) == 2:
                ip, host = b
            elif isinstance(b, tuple) and len(b) == 1:
                if isinstance(b[0], str) and not b[0].isdigit():
                    ip = b[0]
                else:
                    host = b[0]
            elif isinstance(b, Mapping) and "HostPort" in b:
                ip, host = b.get("HostIp") or "", b["HostPort"] or None
            elif (isinstance(b, int | str) and not isinstance(b, bool)) or b is None:
                host = b
            else:
                raise _fail(call, "ports", f"{k!r}: bad host binding {b!r}")
            if not isinstance(ip, str) or ":" in ip:
                raise _fail(call, "ports", f"{k!r}: host address {ip!r} (IPv4 only)")
            if host is None or host == "":
                host = 0                               # the engine picks one
            if isinstance(host, bool) or not str(host).isdigit():
                raise _fail(call, "ports", f"{k!r}: host port {host!r}")
            hp = str(int(host)) if int(host) else ""
            out.append(f"{ip}:{hp}:{int(ctr)}/{proto}" if ip else
                       f"{hp}:{int(ctr)}/{proto}" if hp else f"{int(ctr)}/{proto}")
    return out


def restart_policy(call: str, v: object) -> str:
    """docker-py's {"Name": "on-failure", "MaximumRetryCount": 3} → "on-failure:3"."""
    if v is None:
        return "no"
    if isinstance(v, str):
        return v
    if not isinstance(v, Mapping) or set(v) - {"Name", "MaximumRetryCount"}:
        raise _fail(call, "restart_policy",
                    f"expected {{'Name': ..., 'MaximumRetryCount': n}}, got {v!r}")
    name = v.get("Name") or "no"
    n = v.get("MaximumRetryCount") or 0
    if not isinstance(name, str) or not isinstance(n, int):
        raise _fail(call, "restart_policy", f"bad policy {v!r}")
    if n and name != "on-failure":
        raise _fail(call, "restart_policy", "only on-failure takes MaximumRetryCount")
    return f"{name}:{n}" if n else name


def mem_limit(call: str, v: object) -> str | None:
    """Bytes (an int) or a size with a unit ("512m", "1g", "100k", "1024b"), as docker."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        from cove.engine.logs import parse_size
        s = v[:-1] if len(v) > 2 and v[-1] in "bB" and v[-2].isalpha() else v
        parse_size(s)              # a CoveError now, not after a container was made
        return s
    raise _fail(call, "mem_limit", f"expected bytes (int) or a str like '512m', got {v!r}")


def _nanos(call: str, key: str, d: Mapping[str, Any], *names: str) -> float | None:
    for n in names:
        if d.get(n) is not None:
            x = d[n]
            if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                raise _fail(call, f"healthcheck {n}", f"expected nanoseconds, got {x!r}")
            return x / 1e9 if x else None
    return None


def healthcheck(call: str, v: object, o: RunOptions) -> None:
    """docker-py's Healthcheck dict (test, interval, timeout, retries, start_period, in
    lower or docker's own case; durations in nanoseconds) → the health_* options. A
    ["CMD", ...] test runs through sh -c with its words quoted, ["NONE"] is none."""
    if v is None:
        return
    if not isinstance(v, Mapping):
        raise _fail(call, "healthcheck", f"expected a dict, got {v!r}")
    known = {"test", "Test", "interval", "Interval", "timeout", "Timeout", "retries",
             "Retries", "start_period", "StartPeriod"}
    if set(v) - known:
        raise _fail(call, "healthcheck", f"cove does not take {sorted(set(v) - known)}")
    test = v.get("test", v.get("Test"))
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test == ["NONE"]:
        return
    if not isinstance(test, list | tuple) or not all(isinstance(x, str) for x in test) \
            or test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        raise _fail(call, "healthcheck", f"test {test!r}: expected a str, "
                                         "['CMD-SHELL', cmd], ['CMD', args...] or ['NONE']")
    o.health_cmd = test[1] if test[0] == "CMD-SHELL" and len(test) == 2 else \
        shlex.join(test[1:])
    for attr, names in (("health_interval", ("interval", "Interval")),
                        ("health_timeout", ("timeout", "Timeout")),
                        ("health_start_period", ("start_period", "StartPeriod"))):
        secs = _nanos(call, attr, v, *names)
        if secs is not None:
            setattr(o, attr, secs)
    retries = v.get("retries", v.get("Retries"))
    if retries is not None:
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise _fail(call, "healthcheck retries", f"expected an int, got {retries!r}")
        o.health_retries = retries or 3


def log_config(call: str, v: object) -> list[str]:
    """docker-py's LogConfig ({"Type": "json-file", "Config": {"max-size": "10m"}})."""
    if v is None:
        return []
    if not isinstance(v, Mapping):
        raise _fail(call, "log_config", f"expected a dict, got {v!r}")
    kind = v.get("type", v.get("Type")) or "json-file"
    cfg = v.get("config", v.get("Config")) or {}
    if kind != "json-file":
        raise _fail(call, "log_config", f"type {kind!r}: cove logs json-file only")
    if not isinstance(cfg, Mapping):
        raise _fail(call, "log_config", f"Config: expected a dict, got {cfg!r}")
    return [f"{k}={x}" for k, x in cfg.items()]


def _network(call: str, kw: dict[str, Any], default: str, published: bool) -> str:
    net, mode = kw.pop("network", None), kw.pop("network_mode", None)
    if net and mode:
        raise _fail(call, "network", "network and network_mode together")
    disabled = _bool(call, "network_disabled", kw.pop("network_disabled", False))
    chosen: str | None = net or mode
    if chosen is not None:
        chosen = _str(call, "network" if net else "network_mode", chosen)
        if chosen.startswith("container:"):
            raise _fail(call, "network_mode", f"{chosen!r}: cove cannot share a "
                                              "container's network namespace")
    if disabled:
        if chosen not in (None, "none"):
            raise _fail(call, "network_disabled", f"and network {chosen!r}")
        chosen = "none"
    if chosen is None:
        chosen = "bridge" if default == "auto" and published else \
            ("none" if default == "auto" else default)
    if published and chosen in ("none", "host"):
        raise _fail(call, "ports", f"cannot publish ports on network {chosen!r}")
    return chosen


def _cpus(call: str, kw: dict[str, Any]) -> float | None:
    cpus, nano = kw.pop("cpus", None), kw.pop("nano_cpus", None)
    quota, period = kw.pop("cpu_quota", None), kw.pop("cpu_period", None)
    given = [k for k, x in (("cpus", cpus), ("nano_cpus", nano), ("cpu_quota", quota))
             if x is not None]
    if len(given) > 1:
        raise _fail(call, given[1], f"and {given[0]} together")
    if period is not None and quota is None:
        raise _fail(call, "cpu_period", "without cpu_quota")
    for k, x in (("cpus", cpus), ("nano_cpus", nano), ("cpu_quota", quota),
                 ("cpu_period", period)):
        if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)
                              or x < 0 or (k != "cpus" and not isinstance(x, int))):
            raise _fail(call, k, f"expected a number >= 0, got {x!r}")
    if cpus is not None:
        return float(cpus) or None
    if nano is not None:
        return float(nano) / 1e9 or None
    if quota is not None and quota > 0:
        return float(quota) / float(period or 100_000)
    return None


def translate(image: str, cmd: object, kwargs: dict[str, Any], *, call: str,
              default_network: str, run: bool) -> Plan:
    """The engine's options for `call` (e.g. "containers.run"); `default_network` is
    the network when none is named ("auto": none, or bridge when ports are published);
    `run` allows the run-only keywords (stdout, stderr, stream, remove)."""
    kw = dict(kwargs)
    unknown = sorted(set(kw) - (KNOWN if run else KNOWN - RUN_ONLY))
    if unknown:
        word = "an unexpected keyword argument" if len(unknown) == 1 else \
            "unexpected keyword arguments"
        raise TypeError(f"{call}() got {word} {', '.join(repr(k) for k in unknown)}")
    for cove_name, docker_name in ALIASES.items():
        if cove_name in kw:
            if docker_name in kw:
                raise _fail(call, cove_name, f"and {docker_name} together (the same thing)")
            kw[docker_name] = kw.pop(cove_name)
    for k in sorted(set(kw) & UNSUPPORTED):
        if kw[k]:
            raise _fail(call, k, "not supported by cove")
        del kw[k]
    for k in IGNORED:
        kw.pop(k, None)
    if not isinstance(image, str) or not image:
        raise _fail(call, "image", f"expected an image name, got {image!r}")

    o = RunOptions(image=image, command=command(call, "command", cmd))
    plan = Plan(o)
    if run:
        plan.stdout = _bool(call, "stdout", kw.pop("stdout", True))
        plan.stderr = _bool(call, "stderr", kw.pop("stderr", False))
        plan.stream = _bool(call, "stream", kw.pop("stream", False))
        plan.remove = _bool(call, "remove", kw.pop("remove", False))
    auto_remove = _bool(call, "auto_remove", kw.pop("auto_remove", False))
    plan.detach = _bool(call, "detach", kw.pop("detach", False))
    o.detach = True            # the engine starts it in the background; the API waits
    if run and not plan.detach:
        # the API waits, reads the logs, then removes it itself
        plan.remove = plan.remove or auto_remove
    else:
        # docker: remove with detach is the daemon's auto-removal, as is auto_remove
        o.rm = auto_remove or plan.remove
        plan.remove = False

    if kw.get("name") is not None:
        o.name = _str(call, "name", kw["name"])
    kw.pop("name", None)
    o.env = environment(call, "environment", kw.pop("environment", None))
    o.env_files = _strs(call, "env_files", kw.pop("env_files", None) or [])
    o.volumes = volumes(call, kw.pop("volumes", None))
    o.mounts = mounts(call, kw.pop("mounts", None))
    o.tmpfs = tmpfs(call, kw.pop("tmpfs", None))
    p = kw.pop("ports", None)
    # a dict is docker-py's; a list (or one str) is cove's -p specs, ["8080:80/tcp"]
    o.publish = _strs(call, "publish", p) if isinstance(p, list | tuple | str) else \
        ports(call, p)
    o.network = _network(call, kw, default_network, bool(o.publish))
    o.memory = mem_limit(call, kw.pop("mem_limit", None))
    o.cpus = _cpus(call, kw)
    pids = kw.pop("pids_limit", None)
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int)):
        raise _fail(call, "pids_limit", f"expected an int, got {pids!r}")
    o.pids_limit = pids if pids and pids > 0 else None
    user = kw.pop("user", None)
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    o.user = _str(call, "user", user) if user not in (None, "") else None
    wd = kw.pop("working_dir", None)
    o.workdir = _str(call, "working_dir", wd) if wd else None
    if "entrypoint" in kw and kw["entrypoint"] is not None:
        ep = command(call, "entrypoint", kw["entrypoint"])
        # the engine takes one word: the rest goes before the command (the same argv)
        o.entrypoint = ep[0] if ep else ""
        o.command = [*ep[1:], *o.command]
    kw.pop("entrypoint", None)
    hn = kw.pop("hostname", None)
    o.hostname = _str(call, "hostname", hn) if hn else None
    o.read_only = _bool(call, "read_only", kw.pop("read_only", False))
    iso = kw.pop("isolation", None) or ""
    if iso not in ("", "default", "container", "gvisor", "vm"):
        raise _fail(call, "isolation", f"{iso!r}: expected container, gvisor or vm")
    o.isolation = "" if iso == "default" else iso
    o.cap_add = _strs(call, "cap_add", kw.pop("cap_add", None) or [])
    o.cap_drop = _strs(call, "cap_drop", kw.pop("cap_drop", None) or [])
    # docker spells it no-new-privileges[:true]; the engine takes [=true]
    o.security_opt = [s.replace("no-new-privileges:", "no-new-privileges=", 1)
                      for s in _strs(call, "security_opt", kw.pop("security_opt", None) or [])]
    o.restart = restart_policy(call, kw.pop("restart_policy", None))
    if (o.rm or plan.remove) and o.restart.partition(":")[0] not in ("", "no"):
        # docker's "conflicting options: --restart and --rm": removed on its first exit,
        # or restarted?
        raise _fail(call, "restart_policy", f"{o.restart!r} and remove together")
    healthcheck(call, kw.pop("healthcheck", None), o)
    for k in ("health_cmd", "health_on_failure"):
        if kw.get(k) is not None:
            setattr(o, k, _str(call, k, kw[k]))
        kw.pop(k, None)
    for k in ("health_interval", "health_timeout", "health_start_period", "health_retries"):
        if kw.get(k) is not None:
            x = kw[k]
            if k == "health_retries":
                if isinstance(x, bool) or not isinstance(x, int):
                    raise _fail(call, k, f"expected an int, got {x!r}")
                o.health_retries = x
            else:
                if isinstance(x, bool) or not isinstance(x, int | float | str):
                    raise _fail(call, k, f"expected seconds or a duration, got {x!r}")
                setattr(o, k, parse_duration(x))
        kw.pop(k, None)
    o.log_opts = [*_strs(call, "log_opts", kw.pop("log_opts", None) or []),
                  *log_config(call, kw.pop("log_config", None))]
    # a terminal: the container runs under the monitor like any other (its output, raw,
    # in its log as docker logs a tty); stdin_open keeps its stdin (its terminal's, with
    # tty) open for a later attach, as `run -dit` (docker-py's usual keep-alive)
    o.tty = _bool(call, "tty", kw.pop("tty", False))
    o.interactive = _bool(call, "stdin_open", kw.pop("stdin_open", False))
    if kw.get("stop_signal") is not None:
        o.stop_signal = _str(call, "stop_signal", kw["stop_signal"])
    kw.pop("stop_signal", None)
    plan.labels = labels(call, kw.pop("labels", None))
    if kw:  # KNOWN names a keyword this function does not translate: refuse, not drop
        raise _fail(call, sorted(kw)[0], "not supported by cove")
    return plan
