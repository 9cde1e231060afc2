"""The Compose specification's keys, checked one by one: a checker of types that names
the key path in its error (`Check`), and the parsers of the service keys that have a
structure of their own (ports, volumes, depends_on, healthcheck, deploy and its
update_config). compose.py walks the document and calls these."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from typing import Any

from cove.errors import CoveError

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


class Bad(CoveError):
    """A compose file's error: `<file>: <key path>: <why>`."""


def bad_key(fname: str, path: str, why: str) -> Bad:
    return Bad(f"{fname}: {path}", why)


# -- checkers -----------------------------------------------------------------------------

class Check:
    """Type checks that name the key path in their error."""

    def __init__(self, fname: str) -> None:
        self.f = fname

    def bad(self, path: str, why: str) -> Bad:
        return bad_key(self.f, path, why)

    def mapping(self, v: Any, path: str) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.bad(path, "expected a mapping")
        for k in v:
            if not isinstance(k, str):
                raise self.bad(f"{path}.{k}", "keys must be strings")
        return v

    def text(self, v: Any, path: str) -> str:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise self.bad(path, "expected a string")
        return str(v)

    def integer(self, v: Any, path: str, lo: int | None = None) -> int:
        if isinstance(v, bool):
            raise self.bad(path, "expected an integer")
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if not isinstance(v, int):
            raise self.bad(path, "expected an integer")
        if lo is not None and v < lo:
            raise self.bad(path, f"must be {lo} or more")
        return v

    def flag(self, v: Any, path: str) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no"):
            return v.lower() in ("true", "yes")
        raise self.bad(path, "expected a boolean")

    def strs(self, v: Any, path: str) -> list[str]:
        if not isinstance(v, list):
            raise self.bad(path, "expected a list of strings")
        return [self.text(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def cmd(self, v: Any, path: str) -> list[str]:
        """A command: a string (split as a shell would) or a list of strings."""
        if isinstance(v, str):
            try:
                return shlex.split(v)
            except ValueError as e:
                raise self.bad(path, str(e)) from None
        return self.strs(v, path)

    def duration(self, v: Any, path: str) -> float:
        from cove.engine.options import parse_duration
        if isinstance(v, bool):
            raise self.bad(path, "expected a duration (e.g. 500ms, 10s, 1m30s)")
        if isinstance(v, int | float):
            return float(v)
        if not isinstance(v, str):
            raise self.bad(path, "expected a duration (e.g. 500ms, 10s, 1m30s)")
        rest = v.strip()
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|s|m|h)", rest)
        if parts and "".join(a + b for a, b in parts) == rest:
            mul = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
            return sum(float(a) * mul[b] for a, b in parts)
        try:
            return parse_duration(rest)
        except CoveError:
            raise self.bad(path, "expected a duration (e.g. 500ms, 10s, 1m30s)") from None

    def kv(self, v: Any, path: str) -> dict[str, str]:
        """environment/labels: a mapping or a list of K=V."""
        if isinstance(v, list):
            out: dict[str, str] = {}
            for i, x in enumerate(v):
                s = self.text(x, f"{path}[{i}]")
                k, eq, val = s.partition("=")
                if not k:
                    raise self.bad(f"{path}[{i}]", "expected KEY=VALUE")
                out[k] = val if eq else os.environ.get(k, "")
            return out
        m = self.mapping(v, path)
        return {k: "" if x is None else self.text(x, f"{path}.{k}") for k, x in m.items()}


def size(c: Check, v: Any, path: str) -> str:
    from cove.engine.logs import parse_size
    s = c.text(v, path)
    try:
        parse_size(s)
    except CoveError:
        raise c.bad(path, "expected a size (e.g. 64m, 1g)") from None
    return s


def cpus(c: Check, v: Any, path: str) -> float:
    try:
        f = float(c.text(v, path))
    except ValueError:
        raise c.bad(path, "expected a number of CPUs") from None
    if not f > 0:
        raise c.bad(path, "must be more than 0")
    return f


# -- the pieces of a service --------------------------------------------------------------

def ports(c: Check, v: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise c.bad(path, "expected a list")
    out = []
    for i, p in enumerate(v):
        pp = f"{path}[{i}]"
        if isinstance(p, dict):
            m = c.mapping(p, pp)
            for k in m:
                if k not in ("target", "published", "host_ip", "protocol", "mode"):
                    raise c.bad(f"{pp}.{k}", "unknown key")
            tgt = c.integer(m.get("target"), f"{pp}.target", 1)
            pub = m.get("published")
            ent: dict[str, Any] = {"host_ip": c.text(m.get("host_ip", ""), f"{pp}.host_ip"),
                   "host_port": c.integer(pub, f"{pp}.published", 1) if pub is not None else 0,
                   "proto": c.text(m.get("protocol", "tcp"), f"{pp}.protocol"),
                   "target": tgt}
        else:
            s = c.text(p, pp)
            spec, _, proto = s.partition("/")
            parts = spec.rsplit(":", 2)
            if len(parts) == 1:
                ip, host, tgt_s = "", "", parts[0]
            elif len(parts) == 2:
                ip, (host, tgt_s) = "", parts
            else:
                ip, host, tgt_s = parts
            if not tgt_s.isdigit() or (host and not host.isdigit()):
                raise c.bad(pp, f"invalid port {s!r}: expected [[IP:]HOST:]CONTAINER[/proto]")
            ent = {"host_ip": ip, "host_port": int(host or 0), "proto": proto or "tcp",
                   "target": int(tgt_s)}
        if ent["proto"] not in ("tcp", "udp"):
            raise c.bad(pp, f"protocol {ent['proto']!r}: expected tcp or udp")
        for k in ("host_port", "target"):
            if not 0 <= ent[k] <= 65535 or (k == "target" and ent[k] == 0):
                raise c.bad(pp, f"port {ent[k]} out of range 1-65535")
        if ent["host_ip"]:
            import ipaddress
            try:
                ipaddress.IPv4Address(ent["host_ip"])
            except ValueError:
                raise c.bad(pp, f"host_ip {ent['host_ip']!r}: expected an IPv4 address") \
                    from None
        out.append(ent)
    return out


def volumes(c: Check, v: Any, path: str, named: dict[str, Any],
             base: str) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise c.bad(path, "expected a list")
    out = []
    for i, x in enumerate(v):
        pp = f"{path}[{i}]"
        if isinstance(x, dict):
            m = c.mapping(x, pp)
            src = c.text(m.get("source", ""), f"{pp}.source") if "source" in m else ""
            tgt = c.text(m.get("target", ""), f"{pp}.target")
            ro = c.flag(m.get("read_only", False), f"{pp}.read_only")
            kind = c.text(m.get("type", "volume"), f"{pp}.type")
        else:
            parts = c.text(x, pp).split(":")
            if len(parts) > 3:
                raise c.bad(pp, "expected SOURCE:TARGET[:ro|rw] or TARGET")
            if len(parts) == 1:
                src, tgt, mode = "", parts[0], ""
            else:
                src, tgt, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
            if mode not in ("", "ro", "rw"):
                raise c.bad(pp, f"mode {mode!r}: expected ro or rw")
            ro = mode == "ro"
            kind = "bind" if src.startswith((".", "/", "~")) else "volume"
        if not tgt.startswith("/"):
            raise c.bad(pp, f"target {tgt!r}: expected an absolute path")
        if kind == "bind":
            src = os.path.normpath(os.path.join(base, os.path.expanduser(src)))
        elif kind == "volume":
            if src and src not in named:
                raise c.bad(pp, f"volume {src!r} is not declared in the top-level "
                                "`volumes`")
        elif kind != "tmpfs":
            raise c.bad(f"{pp}.type", f"{kind!r}: expected volume, bind or tmpfs")
        out.append({"type": kind, "source": src, "target": tgt, "read_only": ro})
    return out


def depends(c: Check, v: Any, path: str) -> dict[str, str]:
    if isinstance(v, list):
        return {c.text(x, f"{path}[{i}]"): "service_started" for i, x in enumerate(v)}
    out = {}
    for k, x in c.mapping(v, path).items():
        m = c.mapping(x, f"{path}.{k}")
        cond = c.text(m.get("condition", "service_started"), f"{path}.{k}.condition")
        if cond not in CONDITIONS:
            raise c.bad(f"{path}.{k}.condition", f"{cond!r}: expected one of "
                                                 + ", ".join(CONDITIONS))
        out[k] = cond
    return out


def healthcheck(c: Check, v: Any, path: str) -> dict[str, Any] | None:
    m = c.mapping(v, path)
    for k in m:
        if k not in ("test", "interval", "timeout", "retries", "start_period", "disable",
                     "start_interval"):
            raise c.bad(f"{path}.{k}", "unknown key")
    if m.get("disable") is not None and c.flag(m["disable"], f"{path}.disable"):
        return None
    t = m.get("test")
    if t is None:
        raise c.bad(f"{path}.test", "required")
    if isinstance(t, str):
        cmd = t
    else:
        test = c.strs(t, f"{path}.test")
        if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise c.bad(f"{path}.test", "expected a string or [CMD|CMD-SHELL|NONE, ...]")
        if test[0] == "NONE":
            return None
        cmd = " ".join(test[1:]) if test[0] == "CMD-SHELL" else shlex.join(test[1:])
    out: dict[str, Any] = {"test": cmd, "interval": 30.0, "timeout": 30.0, "retries": 3,
           "start_period": 0.0}
    for k in ("interval", "timeout", "start_period"):
        if k in m:
            out[k] = c.duration(m[k], f"{path}.{k}")
            if k != "start_period" and out[k] <= 0:
                raise c.bad(f"{path}.{k}", "must be more than 0s")
    if "retries" in m:
        out["retries"] = c.integer(m["retries"], f"{path}.retries", 1)
    return out


UPDATE_DEFAULTS: dict[str, Any] = {"parallelism": 1, "delay": 0.0, "order": "stop-first",
                   "failure_action": "pause", "monitor": 5.0}


def update(c: Check, v: Any, path: str) -> dict[str, Any]:
    m = c.mapping(v, path)
    out = dict(UPDATE_DEFAULTS)
    for k, x in m.items():
        p = f"{path}.{k}"
        if k == "parallelism":
            out[k] = c.integer(x, p, 1)
        elif k in ("delay", "monitor"):
            out[k] = c.duration(x, p)
        elif k == "order":
            out[k] = c.text(x, p)
            if out[k] not in ("start-first", "stop-first"):
                raise c.bad(p, f"{x!r}: expected start-first or stop-first")
        elif k == "failure_action":
            out[k] = c.text(x, p)
            if out[k] not in ("rollback", "pause", "continue"):
                raise c.bad(p, f"{x!r}: expected rollback, pause or continue")
        elif k == "max_failure_ratio":
            float(c.text(x, p))
        else:
            raise c.bad(p, "unknown key")
    return out


def deploy(c: Check, v: Any, path: str) -> dict[str, Any]:
    m = c.mapping(v, path)
    out: dict[str, Any] = {"replicas": 1, "limits": {}, "reservations": {},
                           "update_config": dict(UPDATE_DEFAULTS), "restart_policy": {}}
    for k, x in m.items():
        p = f"{path}.{k}"
        if k == "replicas":
            out["replicas"] = c.integer(x, p, 0)
        elif k == "mode":
            if c.text(x, p) != "replicated":
                raise c.bad(p, f"{x!r}: only replicated is supported here")
        elif k == "resources":
            for rk, rv in c.mapping(x, p).items():
                if rk not in ("limits", "reservations"):
                    raise c.bad(f"{p}.{rk}", "unknown key")
                for lk, lv in c.mapping(rv, f"{p}.{rk}").items():
                    lp = f"{p}.{rk}.{lk}"
                    if lk == "cpus":
                        out[rk]["cpus"] = cpus(c, lv, lp)
                    elif lk == "memory":
                        out[rk]["memory"] = size(c, lv, lp)
                    elif lk == "pids" and rk == "limits":
                        out[rk]["pids"] = c.integer(lv, lp, 1)
                    elif lk == "devices":
                        raise c.bad(lp, "device reservations are not supported here")
                    else:
                        raise c.bad(lp, "unknown key")
        elif k in ("update_config", "rollback_config"):
            out[k] = update(c, x, p)
        elif k == "restart_policy":
            rp = c.mapping(x, p)
            for rk in rp:
                if rk not in ("condition", "delay", "max_attempts", "window"):
                    raise c.bad(f"{p}.{rk}", "unknown key")
            cond = c.text(rp.get("condition", "any"), f"{p}.condition")
            if cond not in ("none", "on-failure", "any"):
                raise c.bad(f"{p}.condition", f"{cond!r}: expected none, on-failure or any")
            out["restart_policy"] = {"condition": cond}
        elif k in ("labels", "endpoint_mode", "placement"):
            pass  # swarm placement and endpoint modes have no meaning on one host
        else:
            raise c.bad(p, "unknown key")
    return out


# what makes a replica what it is: a change to any of these rolls the service out
REPLICA_KEYS = ("image", "command", "entrypoint", "environment", "labels", "volumes",
                "networks", "healthcheck", "limits", "hostname", "user", "working_dir",
                "stop_signal", "init", "read_only", "privileged", "cap_add", "cap_drop",
                "dns", "extra_hosts", "expose", "tmpfs", "restart")


def spec_hash(s: dict[str, Any], generation: int = 0) -> str:
    """The replica-defining part of a service spec, hashed (in the state and the
    replicas' labels): equal hashes need no rollout."""
    body = {k: s.get(k) for k in REPLICA_KEYS}
    body["generation"] = generation
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
