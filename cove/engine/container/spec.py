"""A container's OCI spec (its bundle's config.json): the image's config, then the
record's resources, capabilities, seccomp, mounts, host settings and network."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cove.engine import hostconfig, state
from cove.engine.container.mounts import oci_mounts
from cove.engine.options import RunOptions, _env_files, apply_caps
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.image import ContainerConfig


def build_spec(paths: state.Paths, rec: Mapping[str, Any], o: RunOptions, rootfs: str,
               cfg: ContainerConfig) -> dict[str, Any]:
    from cove.image.bundle import image_spec
    hc = rec["HostConfig"]
    spec: dict[str, Any] = image_spec(cfg, rootfs, args=o.command, entrypoint=o.entrypoint,
                      env=[*_env_files(o.env_files), *o.env], workdir=o.workdir,
                      user=o.user, terminal=o.tty, hostname=rec["Config"]["Hostname"])
    lin = spec.setdefault("linux", {})
    if o.isolation:
        # cove-runtime picks its handler from this annotation (docs/isolation.md).
        spec.setdefault("annotations", {})["io.cove.isolation"] = o.isolation
    spec["root"]["readonly"] = o.read_only
    spec["mounts"] = [*spec.get("mounts", []), *oci_mounts(rec["Mounts"])]
    res = lin.setdefault("resources", {})
    if hc["Memory"]:
        res["memory"] = {"limit": hc["Memory"]}
    if hc["NanoCpus"]:
        res["cpu"] = {"quota": hc["NanoCpus"] // 10_000, "period": 100_000}
    if hc["PidsLimit"]:
        res["pids"] = {"limit": hc["PidsLimit"]}
    apply_caps(spec["process"], o.cap_add, o.cap_drop)
    if "seccomp" in lin:
        # docker's profile allows some syscalls only with a capability (chroot with
        # CAP_SYS_CHROOT, mount and unshare with CAP_SYS_ADMIN...): made for these caps
        from cove.oci.seccomp_default import default_profile
        lin["seccomp"] = default_profile(spec["process"]["capabilities"]["bounding"])
    if "devices" in res:
        # docker lets a container mknod any device node (MKNOD is one of its caps);
        # opening one still needs a rule that allows reading or writing it
        res["devices"] += [{"allow": True, "type": t, "access": "m"} for t in ("c", "b")]
    for so in o.security_opt:
        k, _, v = so.partition("=")
        if k == "seccomp" and v == "unconfined":
            lin.pop("seccomp", None)
        elif k == "seccomp":
            with open(v) as f:
                lin["seccomp"] = json.load(f)
        elif k == "no-new-privileges":
            spec["process"]["noNewPrivileges"] = v in ("", "true")
        else:
            raise CoveError(f"--security-opt {so}", "expected seccomp=FILE|unconfined")
    from cove.engine import hostspec, rootless
    hostspec.apply(paths.root, spec, rec)
    mode = hc["NetworkMode"]
    if mode == "host":
        lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "network"]
    elif mode == "none" or rootless.is_slirp(mode):
        # its own namespace, made by the runtime (rootless: in the container's user
        # namespace); slirp4netns is attached by a hook (cove/engine/rootless.py)
        rootless.spec_network(spec, paths, rec)
    else:
        from cove.engine import network
        nsfile = network.netns_path(paths, rec["Name"])
        for n in lin["namespaces"]:
            if n["type"] == "network":
                n["path"] = nsfile
    etcs = ["hosts", "resolv.conf"] if hostconfig.own_etc(rec) else []
    if any(n["type"] == "uts" for n in lin.get("namespaces", [])) and spec.get("hostname"):
        # docker's /etc/hostname: the container's host name, whatever the image has
        # (written by create)
        etcs.append("hostname")
    if etcs:
        # (written by network.attach on a bridge network, by create on none and host);
        # read-only with the root, as docker's
        mode = "ro" if o.read_only else "rw"
        for etc in etcs:
            spec["mounts"].append({"destination": f"/etc/{etc}", "type": "bind",
                                   "source": os.path.join(paths.cdir(rec["Name"]), etc),
                                   "options": ["rbind", mode]})
    return spec
