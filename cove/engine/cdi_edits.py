"""Applying a CDI device's container edits (cove/engine/cdi.py) to an OCI config, as
the CDI library's ContainerEdits.Apply: environment (a key given again replaces the
old value), device nodes (what the spec leaves out taken from the host's node) with
their cgroup rules, mounts (replacing one at the same destination; sorted by depth),
hooks, additional groups and Intel RDT."""

from __future__ import annotations

import os
import stat
from typing import Any

from cove.errors import CoveError


def _host_node(dn: dict[str, Any], where: str) -> dict[str, Any]:
    """The OCI device of a CDI device node, with what the spec leaves out (type,
    numbers, mode) taken from the host's node, as the library's fillMissingInfo."""
    host = dn.get("hostPath") or dn["path"]
    out: dict[str, Any] = {"path": dn["path"]}
    typ = dn.get("type") or ""
    major, minor = dn.get("major"), dn.get("minor")
    mode = dn.get("fileMode")
    if not typ or (typ != "p" and major is None) or mode is None:
        try:
            st = os.stat(host)
        except OSError as e:
            if typ and (typ == "p" or major is not None):
                st = None
            else:
                raise CoveError(where, f"{host}: {e.strerror}") from None
        if st is not None:
            if stat.S_ISCHR(st.st_mode):
                htyp = "c"
            elif stat.S_ISBLK(st.st_mode):
                htyp = "b"
            elif stat.S_ISFIFO(st.st_mode):
                htyp = "p"
            else:
                raise CoveError(where, f"{host} is not a device node")
            typ = typ or htyp
            if typ != "p" and major is None:
                major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            if mode is None:
                mode = stat.S_IMODE(st.st_mode)
    out["type"] = typ
    if typ != "p":
        out["major"], out["minor"] = major or 0, minor or 0
    if mode is not None:
        out["fileMode"] = stat.S_IMODE(mode)
    for k in ("uid", "gid"):
        if dn.get(k) is not None:
            out[k] = dn[k]
    return out


def apply_edits(spec: dict[str, Any], e: dict[str, Any], where: str) -> None:
    proc = spec.setdefault("process", {})
    lin = spec.setdefault("linux", {})
    if e.get("env"):
        env = list(proc.get("env") or [])
        for kv in e["env"]:
            k = kv.partition("=")[0]
            env = [x for x in env if x.partition("=")[0] != k] + [kv]
        proc["env"] = env
    devs = list(lin.get("devices") or [])
    res = lin.setdefault("resources", {})
    rules = list(res.get("devices") or [])
    for i, dn in enumerate(e.get("deviceNodes") or []):
        node = _host_node(dn, f"{where}: deviceNodes[{i}]")
        old = next((d for d in devs if d["path"] == node["path"]), None)
        if old is not None:
            if (old.get("type"), old.get("major"), old.get("minor")) != \
                    (node["type"], node.get("major"), node.get("minor")):
                raise CoveError(f"{where}: deviceNodes[{i}]",
                                f"{node['path']} is already another device in the "
                                "container")
            devs.remove(old)
        devs.append(node)
        if node["type"] in ("c", "b", "u"):
            rules.append({"allow": True, "type": "c" if node["type"] == "u" else
                          node["type"], "major": node["major"], "minor": node["minor"],
                          "access": dn.get("permissions") or "rwm"})
    if e.get("deviceNodes"):
        lin["devices"] = devs
        res["devices"] = rules
    if e.get("mounts"):
        mounts = list(spec.get("mounts") or [])
        for m in e["mounts"]:
            dst = os.path.normpath(m["containerPath"])
            mounts = [x for x in mounts if os.path.normpath(x["destination"]) != dst]
            typ = m.get("type") or "bind"
            opts = list(m.get("options") or [])
            if typ == "bind" and not {"bind", "rbind"} & set(opts):
                opts.insert(0, "rbind")
            mounts.append({"destination": dst, "type": typ, "source": m["hostPath"],
                           "options": opts})
        # the library's SortMountsByPath: shallower destinations first (a stable sort:
        # a mount of /a/b is not hidden under a later one of /a)
        spec["mounts"] = sorted(mounts, key=lambda x: os.path.normpath(
            x["destination"]).count("/"))
    for h in e.get("hooks") or []:
        hook: dict[str, Any] = {"path": h["path"]}
        for k in ("args", "env", "timeout"):
            if h.get(k):
                hook[k] = h[k]
        spec.setdefault("hooks", {}).setdefault(h["hookName"], []).append(hook)
    if e.get("additionalGids"):
        user = proc.setdefault("user", {"uid": 0, "gid": 0})
        gids = list(user.get("additionalGids") or [])
        user["additionalGids"] = gids + [g for g in e["additionalGids"] if g not in gids]
    if e.get("intelRdt"):
        rdt = {k: v for k, v in e["intelRdt"].items() if v not in (None, "")}
        lin["intelRdt"] = {**(lin.get("intelRdt") or {}), **rdt}
