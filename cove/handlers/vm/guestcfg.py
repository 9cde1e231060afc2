"""The bundle's config.json seen from the guest: paths translated to the VM's shares,
the network mode, the VM's size; and the vm cache directory."""

from __future__ import annotations

import json
import os
from typing import Any

from cove.errors import CoveError

ANNOTATION = "io.cove.isolation"
NET_ANNOTATION = "io.cove.vm.network"
GUEST_RUN = "/run/cove"
# Hooks the guest's runtime runs (in the guest's namespaces, as the spec places them);
# prestart, createRuntime, poststart and poststop run on the host (the host verbs).
GUEST_HOOKS = ("createContainer", "startContainer")


def cache_dir() -> str:
    env = os.environ.get("COVE_VM_CACHE")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/cove/vm"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "cove", "vm")


def src_dir() -> str:
    """The directory holding the `cove` package (shared read-only with the guest)."""
    import cove

    return os.path.dirname(os.path.abspath(cove.__file__))


class Share:
    def __init__(self, tag: str, path: str, ro: bool) -> None:
        self.tag = tag
        self.path = path
        self.ro = ro


def guest_config(raw: dict[str, Any], rootfs: str) -> tuple[dict[str, Any], list[Share], str]:
    """The config the guest's cove-runtime runs, the bind-mount shares, the network mode."""
    cfg = json.loads(json.dumps(raw))
    cfg["root"] = {"path": f"{GUEST_RUN}/rootfs",
                   "readonly": bool((raw.get("root") or {}).get("readonly"))}
    shares: list[Share] = []
    by_dir: dict[str, Share] = {}
    for m in cfg.get("mounts") or []:
        opts = m.get("options") or []
        if m.get("type") != "bind" and "bind" not in opts and "rbind" not in opts:
            continue
        src = m.get("source", "")
        if not src.startswith("/") or src.startswith("/dev/"):
            continue
        if os.path.isdir(src):
            d, name = src, ""
        elif os.path.exists(src):
            d, name = os.path.dirname(src), os.path.basename(src)
        else:
            raise CoveError(f"mounts: {m.get('destination')}", f"source {src} does not exist")
        ro = "ro" in opts
        sh = by_dir.get(d)
        if sh is None:
            sh = by_dir[d] = Share(f"m{len(shares)}", d, ro)
            shares.append(sh)
        sh.ro = sh.ro and ro
        m["source"] = f"{GUEST_RUN}/{sh.tag}" + (f"/{name}" if name else "")
    lin = cfg.setdefault("linux", {})
    nss = lin.get("namespaces") or []
    netns = [n for n in nss if n.get("type") == "network"]
    net = (raw.get("annotations") or {}).get(NET_ANNOTATION, "")
    if not net:
        net = "none" if netns and not netns[0].get("path") else "user"
    if net not in ("none", "user"):
        raise CoveError(f"annotation {NET_ANNOTATION}={net}", "expected none or user")
    # Namespaces to join are the host's: meaningless in the guest, which is its own world.
    lin["namespaces"] = [n for n in nss if not n.get("path")
                         and not (net == "user" and n.get("type") == "network")]
    lin.pop("cgroupsPath", None)
    hooks = cfg.pop("hooks", None)
    if isinstance(hooks, dict):
        kept = {k: v for k, v in hooks.items() if k in GUEST_HOOKS}
        if kept:
            cfg["hooks"] = kept
    # Inside the guest the process runs in a plain container: an isolation annotation
    # left in would make the guest's cove-runtime try to start a VM of its own.
    ann = cfg.get("annotations")
    if isinstance(ann, dict) and ANNOTATION in ann:
        cfg["annotations"] = {k: v for k, v in ann.items() if k != ANNOTATION}
    return cfg, shares, net


def sizes(raw: dict[str, Any]) -> tuple[int, int]:
    """(MiB of guest memory, vCPUs) from linux.resources."""
    res = (raw.get("linux") or {}).get("resources") or {}
    mem = 512
    limit = (res.get("memory") or {}).get("limit")
    if isinstance(limit, int) and limit > 0:
        mem = max(256, limit // (1 << 20) + 160)  # the guest kernel and agent's share
    cpu = res.get("cpu") or {}
    cpus = 1
    quota, period = cpu.get("quota"), cpu.get("period") or 100000
    if isinstance(quota, int) and quota > 0:
        cpus = -(-quota // period)
    elif cpu.get("cpus"):
        cpus = 0
        for part in str(cpu["cpus"]).split(","):
            a, _, b = part.partition("-")
            cpus += int(b or a) - int(a) + 1
    return mem, max(1, min(cpus, os.cpu_count() or 1))
