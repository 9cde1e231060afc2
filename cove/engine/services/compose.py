"""The Compose specification: read a compose file (PyYAML), interpolate `${VAR}` from the
environment and the project's `.env`, validate it and normalize it into plain dicts
that `state.py` stores and `reconcile.py` acts on.

Every error is one CoveError naming the file and the key path
(`compose.yaml: services.web.deploy.replicas: expected an integer`), raised before
anything is made. Keys that would change what runs and that Cove does not implement
are refused rather than ignored; keys that only describe (`x-*`, `version`, `name`) are
taken or skipped.
"""

from __future__ import annotations

import os
import re
from typing import Any

from cove.engine.services.composekeys import (
    Check,
    bad_key,
    cpus,
    depends,
    deploy,
    healthcheck,
    ports,
    size,
    volumes,
)
from cove.errors import CoveError

FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
RESTARTS = ("no", "always", "on-failure", "unless-stopped")

# the service keys Cove takes (anything else but x-* is refused)
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports",
    "networks", "volumes", "depends_on", "healthcheck", "restart", "deploy", "labels",
    "profiles", "container_name", "hostname", "user", "working_dir", "stop_grace_period",
    "stop_signal", "init", "read_only", "cap_add", "cap_drop", "mem_limit", "cpus",
    "pids_limit", "expose", "tmpfs", "extra_hosts", "dns", "privileged", "scale",
}
TOP_KEYS = {"version", "name", "services", "networks", "volumes"}



# -- interpolation ------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def read_dotenv(path: str) -> dict[str, str]:
    """`.env`: KEY=VALUE lines, `#` comments, optional quotes (compose's format)."""
    out: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return out
    except OSError as e:
        raise CoveError(path, e.strerror or str(e)) from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        k, eq, v = line.partition("=")
        k = k.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", k):
            raise CoveError(f"{path}: line {n}", "expected KEY=VALUE")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k] = v
    return out


def interpolate(value: Any, env: dict[str, str], fname: str, path: str = "") -> Any:
    """Compose's substitution over every string of the document: `$VAR`, `${VAR}`,
    `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`, `$$` for `$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, fname, f"{path}.{k}" if path else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, fname, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        if m.group(3):
            return env.get(m.group(3), "")
        expr = m.group(2)
        mm = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.S)
        if not mm:
            raise bad_key(fname, path, f"invalid interpolation format for ${{{expr}}}")
        name, op, arg = mm.group(1), mm.group(2), mm.group(3) or ""
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op in ("-", ":-"):
            return arg if unset else str(val)
        if op in ("?", ":?"):
            if unset:
                raise bad_key(fname, path, f"required variable {name} is missing a value"
                                        + (f": {arg}" if arg else ""))
            return str(val)
        if op in ("+", ":+"):
            return "" if unset else arg
        return val or ""
    return _VAR.sub(sub, value)


# -- the document -------------------------------------------------------------------------

def find(workdir: str) -> str:
    for f in FILES:
        p = os.path.join(workdir, f)
        if os.path.exists(p):
            return p
    raise CoveError("compose", f"no {FILES[0]} (or {', '.join(FILES[1:])}) in {workdir}")


def project_name(s: str) -> str:
    """Compose's normalization: lower case, [a-z0-9_-], starting with a letter or digit."""
    n = re.sub(r"[^a-z0-9_-]", "", s.lower()).lstrip("_-")
    if not n:
        raise CoveError(f"project name {s!r}", "use letters, digits, '-' and '_'")
    return n


def load(path: str, project: str | None = None, profiles: list[str] | None = None,
         environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Read and validate the compose file at `path` into the project model."""
    import yaml
    fname = os.path.basename(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise CoveError(path, e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise bad_key(fname, where, str(why)) from None
    env = {**read_dotenv(os.path.join(base, ".env")), **(environ or os.environ)}
    c = Check(fname)
    if not isinstance(doc, dict):
        raise c.bad("(top)", "expected a mapping with `services`")
    doc = interpolate(doc, env, fname)
    for k in doc:
        if k not in TOP_KEYS and not str(k).startswith("x-"):
            raise c.bad(str(k), "unknown top-level key" + (
                " (configs and secrets are not supported here)"
                if k in ("configs", "secrets") else ""))
    name = project_name(project or (c.text(doc["name"], "name") if doc.get("name")
                                    else os.path.basename(base)))
    nets = c.mapping(doc.get("networks"), "networks")
    for k, v in nets.items():
        for nk in c.mapping(v, f"networks.{k}"):
            if nk not in ("driver", "name", "labels", "external") or \
                    (nk == "driver" and v[nk] not in ("bridge", None)):
                raise c.bad(f"networks.{k}.{nk}", "only bridge networks made by "
                                                  "the project are supported here")
        if k == "default" or not k.replace("-", "").replace("_", "").isalnum():
            if k != "default":
                raise c.bad(f"networks.{k}", "use letters, digits, '-' and '_'")
    vols = c.mapping(doc.get("volumes"), "volumes")
    for k, v in vols.items():
        for vk in c.mapping(v, f"volumes.{k}"):
            if vk not in ("driver", "labels", "name"):
                raise c.bad(f"volumes.{k}.{vk}", "unknown key")
    raw = c.mapping(doc.get("services"), "services")
    if not raw:
        raise c.bad("services", "no services defined")
    want_profiles = set(profiles or [p for p in env.get("COMPOSE_PROFILES", "").split(",")
                                     if p])
    services: dict[str, Any] = {}
    for sname, sv in raw.items():
        p = f"services.{sname}"
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", sname):
            raise c.bad(p, "use letters, digits, '-', '_' and '.'")
        s = _service(c, sname, c.mapping(sv, p), p, vols, nets, base)
        if s["profiles"] and not want_profiles & set(s["profiles"]):
            continue
        services[sname] = s
    _cross_checks(c, services)
    used_nets = sorted({n for s in services.values() for n in s["networks"]})
    return {"name": name, "workdir": base, "file": os.path.abspath(path),
            "services": services, "networks": used_nets,
            "volumes": sorted({v["source"] for s in services.values()
                               for v in s["volumes"] if v["type"] == "volume"
                               and v["source"]})}


def _service(c: Check, sname: str, m: dict[str, Any], p: str, vols: dict[str, Any],
             nets: dict[str, Any], base: str) -> dict[str, Any]:
    """One service of the file, validated and normalized (every error names its key)."""
    for k in m:
        if k not in SERVICE_KEYS and not k.startswith("x-"):
            raise c.bad(f"{p}.{k}", "unknown key" + (" (not supported here)" if k in (
                "links", "external_links", "secrets", "configs", "network_mode", "pid",
                "ipc", "devices", "extends", "volumes_from") else ""))
    s: dict[str, Any] = {"name": sname, **_image(c, sname, m, p, base)}
    s["command"] = c.cmd(m["command"], f"{p}.command") if m.get("command") is not None \
        else None
    s["entrypoint"] = c.cmd(m["entrypoint"], f"{p}.entrypoint") \
        if m.get("entrypoint") is not None else None
    s["environment"] = _environment(c, m, p, base)
    s["labels"] = c.kv(m.get("labels") or {}, f"{p}.labels")
    s["ports"] = ports(c, m.get("ports") or [], f"{p}.ports")
    s["volumes"] = volumes(c, m.get("volumes") or [], f"{p}.volumes", vols, base)
    s["networks"] = _networks(c, m.get("networks"), p, nets)
    s["depends_on"] = depends(c, m.get("depends_on") or {}, f"{p}.depends_on")
    s["healthcheck"] = healthcheck(c, m["healthcheck"], f"{p}.healthcheck") \
        if "healthcheck" in m else None
    # unset (None): a clean exit is final, anything else is replaced (reconcile.py)
    s["restart"] = c.text(m["restart"], f"{p}.restart") if "restart" in m else None
    if s["restart"] is not None and s["restart"].split(":")[0] not in RESTARTS:
        raise c.bad(f"{p}.restart", f"{s['restart']!r}: expected no, always, "
                                    "on-failure[:N] or unless-stopped")
    s.update(_deploy(c, m, p))
    s["profiles"] = c.strs(m["profiles"], f"{p}.profiles") if "profiles" in m else []
    s["container_name"] = c.text(m["container_name"], f"{p}.container_name") \
        if "container_name" in m else None
    if s["container_name"] and s["replicas"] > 1:
        raise c.bad(f"{p}.container_name", f"a fixed name can't be given to "
                                           f"{s['replicas']} replicas")
    s.update(_process(c, m, p))
    s["autoscale"] = None
    if m.get("x-cove-autoscale") is not None:
        s["autoscale"] = _autoscale(c, m["x-cove-autoscale"], p)
        lo, hi = s["autoscale"]["min"], s["autoscale"]["max"]
        s["replicas"] = min(max(s["replicas"], lo), hi)
    return s


def _image(c: Check, sname: str, m: dict[str, Any], p: str, base: str) -> dict[str, Any]:
    """`image` and `build` (a build's image is named after the service when unset)."""
    s: dict[str, Any] = {"build": None}
    if "image" in m:
        s["image"] = c.text(m["image"], f"{p}.image")
    if "build" in m:
        b = m["build"]
        if isinstance(b, str):
            s["build"] = {"context": os.path.normpath(os.path.join(base, b)),
                          "dockerfile": None}
        else:
            bm = c.mapping(b, f"{p}.build")
            for k in bm:
                if k not in ("context", "dockerfile", "args", "target"):
                    raise c.bad(f"{p}.build.{k}", "unknown key")
            s["build"] = {"context": os.path.normpath(os.path.join(
                base, c.text(bm.get("context", "."), f"{p}.build.context"))),
                "dockerfile": c.text(bm["dockerfile"], f"{p}.build.dockerfile")
                if "dockerfile" in bm else None,
                "args": c.kv(bm.get("args") or {}, f"{p}.build.args"),
                "target": c.text(bm["target"], f"{p}.build.target") if "target" in bm
                else None}
        s.setdefault("image", f"{sname}")
    if "image" not in s:
        raise c.bad(p, "neither image nor build is set")
    return s


def _environment(c: Check, m: dict[str, Any], p: str, base: str) -> dict[str, str]:
    """`env_file`s in order, then `environment` over them."""
    env: dict[str, str] = {}
    files = m.get("env_file") or []
    for i, ef in enumerate([files] if isinstance(files, str) else files):
        fp = os.path.join(base, c.text(ef, f"{p}.env_file[{i}]"))
        if not os.path.exists(fp):
            raise c.bad(f"{p}.env_file[{i}]", f"{fp}: no such file")
        env.update(read_dotenv(fp))
    env.update(c.kv(m.get("environment") or {}, f"{p}.environment"))
    return env


def _networks(c: Check, n: Any, p: str, nets: dict[str, Any]) -> list[str]:
    """The service's networks (a list, or a mapping whose keys count), each declared;
    the first one has the replica's address, default route and published ports."""
    if n is None:
        return ["default"]
    names = c.strs(n, f"{p}.networks") if isinstance(n, list) \
        else list(c.mapping(n, f"{p}.networks"))
    for x in names:
        if x != "default" and x not in nets:
            raise c.bad(f"{p}.networks", f"network {x!r} is not declared in the "
                                         "top-level `networks`")
    if not names:
        raise c.bad(f"{p}.networks", "at least one network")
    return list(dict.fromkeys(names))


def _deploy(c: Check, m: dict[str, Any], p: str) -> dict[str, Any]:
    """`deploy` (and the older `scale`, `mem_limit`, `cpus`, `pids_limit`)."""
    d = deploy(c, m.get("deploy"), f"{p}.deploy")
    if "scale" in m:
        d["replicas"] = c.integer(m["scale"], f"{p}.scale", 0)
    if "mem_limit" in m:
        d["limits"].setdefault("memory", size(c, m["mem_limit"], f"{p}.mem_limit"))
    if "cpus" in m:
        d["limits"].setdefault("cpus", cpus(c, m["cpus"], f"{p}.cpus"))
    if "pids_limit" in m:
        d["limits"].setdefault("pids", c.integer(m["pids_limit"], f"{p}.pids_limit", 1))
    return {"replicas": d["replicas"], "limits": d["limits"],
            "reservations": d["reservations"], "update_config": d["update_config"],
            "rollback_config": d.get("rollback_config", d["update_config"]),
            "restart_policy": d["restart_policy"]}


def _process(c: Check, m: dict[str, Any], p: str) -> dict[str, Any]:
    """What the replica's process runs as and with: user, hostname, capabilities..."""
    s: dict[str, Any] = {}
    for k in ("hostname", "user", "working_dir", "stop_signal"):
        s[k] = c.text(m[k], f"{p}.{k}") if k in m else None
    s["stop_grace_period"] = c.duration(m["stop_grace_period"], f"{p}.stop_grace_period") \
        if "stop_grace_period" in m else 10.0
    for k in ("init", "read_only", "privileged"):
        s[k] = c.flag(m[k], f"{p}.{k}") if k in m else False
    for k in ("cap_add", "cap_drop", "dns", "extra_hosts"):
        s[k] = c.strs(m[k], f"{p}.{k}") if k in m else []
    s["expose"] = [c.text(x, f"{p}.expose[{i}]") for i, x in enumerate(m.get("expose") or [])]
    t = m.get("tmpfs") or []
    s["tmpfs"] = [c.text(t, f"{p}.tmpfs")] if isinstance(t, str) else c.strs(t, f"{p}.tmpfs")
    return s


def _autoscale(c: Check, auto: Any, p: str) -> dict[str, Any]:
    try:
        from cove.engine.services import autoscale
    except ImportError:  # the services networking work is not here
        raise c.bad(f"{p}.x-cove-autoscale", "autoscaling is not available") from None
    try:
        spec: dict[str, Any] = autoscale.parse_spec(auto, f"{p}.x-cove-autoscale")
    except CoveError as e:
        raise c.bad(e.what, e.why) from None
    return spec


def _cross_checks(c: Check, services: dict[str, Any]) -> None:
    """What spans services: dependencies that exist and have no cycle, host ports used
    once."""
    for sname, s in services.items():
        for dep in s["depends_on"]:
            if dep not in services:
                raise c.bad(f"services.{sname}.depends_on.{dep}",
                            "no such service (or not in the active profiles)")
    order(services, c.f)
    seen: dict[tuple[str, int, str], str] = {}
    for sname, s in services.items():
        for i, pt in enumerate(s["ports"]):
            if not pt["host_port"]:
                continue
            key = (pt["host_ip"] or "0.0.0.0", pt["host_port"], pt["proto"])
            anyip = ("0.0.0.0", pt["host_port"], pt["proto"])
            clash = seen.get(key) or (seen.get(anyip) if key != anyip else None) or (
                next((v for k, v in seen.items() if k[1:] == key[1:]), None)
                if key[0] == "0.0.0.0" else None)
            if clash:
                raise c.bad(f"services.{sname}.ports[{i}]",
                            f"host port {pt['host_port']}/{pt['proto']} is already "
                            f"published by {clash}")
            seen[key] = f"services.{clash or sname}.ports"


def order(services: dict[str, Any], fname: str = "compose.yaml") -> list[str]:
    """The services, each after those it depends on; a cycle is an error naming it."""
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cyc = [*trail[trail.index(n):], n]
            raise bad_key(fname, f"services.{n}.depends_on",
                       "dependency cycle: " + " -> ".join(cyc))
        state[n] = 1
        for d in services[n]["depends_on"]:
            if d in services:
                visit(d, [*trail, n])
        state[n] = 2
        out.append(n)
    for n in services:
        visit(n, [])
    return out
