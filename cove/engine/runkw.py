"""One docker-py keyword of the Python API's `run`/`create` each: its value checked and
translated to what the engine's `RunOptions` takes, or refused with a TypeError naming
the keyword (`fail`). cove/engine/runargs.py decides which keywords a call may pass and
puts these together."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from cove.engine.options import RunOptions


def fail(call: str, key: str, why: str) -> TypeError:
    return TypeError(f"{call}(): {key}: {why}")


def str_of(call: str, key: str, v: object) -> str:
    if not isinstance(v, str):
        raise fail(call, key, f"expected a str, got {type(v).__name__}")
    return v


def strs(call: str, key: str, v: object) -> list[str]:
    """A list of strings; one string is a list of one (its meaning is plain: a string
    is never taken character by character)."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    raise fail(call, key, f"expected a list of str, got {v!r}")


def bool_of(call: str, key: str, v: object) -> bool:
    """True or False (None is False); not any truthy value: `detach="no"` is an error."""
    if v is None:
        return False
    if not isinstance(v, bool):
        raise fail(call, key, f"expected True or False, got {v!r}")
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
            raise fail(call, key, f"cannot split {v!r}: {e}") from None
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    raise fail(call, key, f"expected a str or a list of str, got {v!r}")


def environment(call: str, key: str, v: object) -> list[str]:
    """A dict {"K": "V"} (values formatted as docker-py does: str(v); None gives a bare
    "K", which takes this process's value, as `cove run -e K`) or a list of "K=V"."""
    if v is None:
        return []
    if isinstance(v, Mapping):
        out = []
        for k, val in v.items():
            if not isinstance(k, str) or not k or "=" in k:
                raise fail(call, key, f"bad variable name {k!r}")
            if isinstance(val, bytes):
                val = val.decode()
            out.append(k if val is None else f"{k}={val}")
        return out
    items = strs(call, key, v)
    for e in items:
        if not e or e.startswith("="):
            raise fail(call, key, f"expected K=V, got {e!r}")
    return items


def labels(call: str, v: object) -> dict[str, str]:
    """A dict {str: str}, or a list of names (each with the value "")."""
    if v is None:
        return {}
    if isinstance(v, Mapping):
        if not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise fail(call, "labels", "expected a dict of str to str")
        return dict(v)
    return dict.fromkeys(strs(call, "labels", v), "")


def volumes(call: str, v: object) -> list[str]:
    """docker-py's dict {host_path_or_name: {"bind": "/dst", "mode": "ro"}} (or
    {"bind": ..., "ro": True}, a "propagation", or a plain "/dst"), or a list of
    "src:dst[:mode]" (or "/dst": an anonymous volume) → cove's -v specs, whose options
    the engine checks as docker's (ro, rw, z, Z, nocopy, a propagation)."""
    if v is None:
        return []
    if not isinstance(v, Mapping):
        return strs(call, "volumes", v)
    out = []
    for src, spec in v.items():
        if isinstance(src, bytes):
            src = src.decode()
        if not isinstance(src, str) or not src or ":" in src:
            raise fail(call, "volumes", f"bad source {src!r}")
        if isinstance(spec, str):
            spec = {"bind": spec}
        if not isinstance(spec, Mapping) or not isinstance(spec.get("bind"), str):
            raise fail(call, "volumes", f"{src!r}: expected {{'bind': '/path', "
                                         f"'mode': 'ro'|'rw'}}, got {spec!r}")
        extra = set(spec) - {"bind", "mode", "ro", "propagation"}
        if extra:
            raise fail(call, "volumes", f"{src!r}: cove does not take {sorted(extra)}")
        if "ro" in spec and "mode" in spec:
            raise fail(call, "volumes", f"{src!r}: both 'ro' and 'mode'")
        mode = ("ro" if spec["ro"] else "rw") if "ro" in spec else \
            str_of(call, "volumes", spec.get("mode") or "rw")
        if spec.get("propagation"):
            mode += "," + str_of(call, "volumes", spec["propagation"])
        if ":" in spec["bind"] or ":" in mode:
            raise fail(call, "volumes", f"{src!r}: bad bind {spec!r}")
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
        raise fail(call, "mounts", f"expected a list of mounts, got {v!r}")
    out = []
    for m in v:
        if isinstance(m, str):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise fail(call, "mounts", f"expected a str or a docker Mount, got {m!r}")
        extra = [k for k, x in m.items()
                 if k not in ("Type", "Source", "Target", "ReadOnly") and x]
        if extra:
            raise fail(call, "mounts", f"cove does not take {extra}")
        kind = m.get("Type") or "volume"
        if kind not in ("bind", "volume", "tmpfs"):
            raise fail(call, "mounts", f"type {kind!r}: expected bind, volume or tmpfs")
        src, dst = str(m.get("Source") or ""), str(m.get("Target") or "")
        if "," in src or "," in dst or "=" in src or "=" in dst:
            raise fail(call, "mounts", f"{src!r} → {dst!r}: paths with ',' or '='")
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
        else strs(call, "tmpfs", v)
    out = []
    for item in items:
        path, _, opts = item.partition(":")
        if opts:
            raise fail(call, "tmpfs", f"{item!r}: cove takes no tmpfs options yet")
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
        raise fail(call, "ports", f"expected a dict like {{'80/tcp': 8080}}, got {v!r}")
    out = []
    for k, binds in v.items():
        ctr, _, proto = str(k).partition("/")
        proto = proto or "tcp"
        if not ctr.isdigit() or proto not in ("tcp", "udp"):
            raise fail(call, "ports", f"{k!r}: expected PORT or PORT/tcp|udp")
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
                raise fail(call, "ports", f"{k!r}: bad host binding {b!r}")
            if not isinstance(ip, str) or ":" in ip:
                raise fail(call, "ports", f"{k!r}: host address {ip!r} (IPv4 only)")
            if host is None or host == "":
                host = 0                               # the engine picks one
            if isinstance(host, bool) or not str(host).isdigit():
                raise fail(call, "ports", f"{k!r}: host port {host!r}")
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
        raise fail(call, "restart_policy",
                    f"expected {{'Name': ..., 'MaximumRetryCount': n}}, got {v!r}")
    name = v.get("Name") or "no"
    n = v.get("MaximumRetryCount") or 0
    if not isinstance(name, str) or not isinstance(n, int):
        raise fail(call, "restart_policy", f"bad policy {v!r}")
    if n and name != "on-failure":
        raise fail(call, "restart_policy", "only on-failure takes MaximumRetryCount")
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
    raise fail(call, "mem_limit", f"expected bytes (int) or a str like '512m', got {v!r}")


def _nanos(call: str, key: str, d: Mapping[str, Any], *names: str) -> float | None:
    for n in names:
        if d.get(n) is not None:
            x = d[n]
            if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                raise fail(call, f"healthcheck {n}", f"expected nanoseconds, got {x!r}")
            return x / 1e9 if x else None
    return None


def healthcheck(call: str, v: object, o: RunOptions) -> None:
    """docker-py's Healthcheck dict (test, interval, timeout, retries, start_period, in
    lower or docker's own case; durations in nanoseconds) → the health_* options. A
    ["CMD", ...] test runs through sh -c with its words quoted, ["NONE"] is none."""
    if v is None:
        return
    if not isinstance(v, Mapping):
        raise fail(call, "healthcheck", f"expected a dict, got {v!r}")
    known = {"test", "Test", "interval", "Interval", "timeout", "Timeout", "retries",
             "Retries", "start_period", "StartPeriod"}
    if set(v) - known:
        raise fail(call, "healthcheck", f"cove does not take {sorted(set(v) - known)}")
    test = v.get("test", v.get("Test"))
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test == ["NONE"]:
        return
    if not isinstance(test, list | tuple) or not all(isinstance(x, str) for x in test) \
            or test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        raise fail(call, "healthcheck", f"test {test!r}: expected a str, "
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
            raise fail(call, "healthcheck retries", f"expected an int, got {retries!r}")
        o.health_retries = retries or 3


def log_config(call: str, v: object) -> list[str]:
    """docker-py's LogConfig ({"Type": "json-file", "Config": {"max-size": "10m"}})."""
    if v is None:
        return []
    if not isinstance(v, Mapping):
        raise fail(call, "log_config", f"expected a dict, got {v!r}")
    kind = v.get("type", v.get("Type")) or "json-file"
    cfg = v.get("config", v.get("Config")) or {}
    if kind != "json-file":
        raise fail(call, "log_config", f"type {kind!r}: cove logs json-file only")
    if not isinstance(cfg, Mapping):
        raise fail(call, "log_config", f"Config: expected a dict, got {cfg!r}")
    return [f"{k}={x}" for k, x in cfg.items()]


def network(call: str, kw: dict[str, Any], default: str, published: bool) -> str:
    net, mode = kw.pop("network", None), kw.pop("network_mode", None)
    if net and mode:
        raise fail(call, "network", "network and network_mode together")
    disabled = bool_of(call, "network_disabled", kw.pop("network_disabled", False))
    chosen: str | None = net or mode
    if chosen is not None:
        chosen = str_of(call, "network" if net else "network_mode", chosen)
        if chosen.startswith("container:"):
            raise fail(call, "network_mode", f"{chosen!r}: cove cannot share a "
                                              "container's network namespace")
    if disabled:
        if chosen not in (None, "none"):
            raise fail(call, "network_disabled", f"and network {chosen!r}")
        chosen = "none"
    if chosen is None:
        chosen = "bridge" if default == "auto" and published else \
            ("none" if default == "auto" else default)
    if published and chosen in ("none", "host"):
        raise fail(call, "ports", f"cannot publish ports on network {chosen!r}")
    return chosen


def cpus(call: str, kw: dict[str, Any]) -> float | None:
    cpus, nano = kw.pop("cpus", None), kw.pop("nano_cpus", None)
    quota, period = kw.pop("cpu_quota", None), kw.pop("cpu_period", None)
    given = [k for k, x in (("cpus", cpus), ("nano_cpus", nano), ("cpu_quota", quota))
             if x is not None]
    if len(given) > 1:
        raise fail(call, given[1], f"and {given[0]} together")
    if period is not None and quota is None:
        raise fail(call, "cpu_period", "without cpu_quota")
    for k, x in (("cpus", cpus), ("nano_cpus", nano), ("cpu_quota", quota),
                 ("cpu_period", period)):
        if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)
                              or x < 0 or (k != "cpus" and not isinstance(x, int))):
            raise fail(call, k, f"expected a number >= 0, got {x!r}")
    if cpus is not None:
        return float(cpus) or None
    if nano is not None:
        return float(nano) / 1e9 or None
    if quota is not None and quota > 0:
        return float(quota) / float(period or 100_000)
    return None
