"""`cove run`'s device flags, parsed and checked when the container is created:
--device (host nodes, and CDI names resolved through cove/engine/cdi.py), its
--device-cgroup-rule and --annotation (whose `cdi.k8s.io/` keys name CDI devices too),
and why a runtime handler (gvisor, vm) refuses them. Apart from cove/engine/hostconfig.py,
which puts them into the record's HostConfig."""

from __future__ import annotations

import os
import stat

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.options import RunOptions


def parse_device(spec: str) -> dict[str, str]:
    """`--device HOST[:CONTAINER][:PERMISSIONS]` → docker's DeviceMapping."""
    parts = spec.split(":")
    flag = f"--device {spec}"
    perms = "rwm"
    if len(parts) > 1 and parts[-1] and all(c in "rwm" for c in parts[-1]) \
            and not parts[-1].startswith("/"):
        perms = parts.pop()
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise CoveError(flag, "expected /dev/HOST[:/dev/CONTAINER][:rwm]")
    host = parts[0]
    ctr = parts[1] if len(parts) == 2 else host
    if not ctr.startswith("/"):
        raise CoveError(flag, f"{ctr!r}: the path in the container must be absolute")
    try:
        st = os.stat(host)
    except OSError as e:
        raise CoveError(flag, f"{host}: {e.strerror}") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise CoveError(flag, f"{host} is not a device node")
    return {"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}


def parse_device_cgroup_rule(rule: str) -> str:
    """`--device-cgroup-rule 'c 1:3 rwm'` (TYPE MAJOR:MINOR ACCESS, `*` for any
    number, TYPE a for all), as docker's check; kept as written."""
    parts = rule.split()
    flag = f"--device-cgroup-rule {rule}"
    if len(parts) != 3 or parts[0] not in ("a", "b", "c"):
        raise CoveError(flag, "expected 'TYPE MAJOR:MINOR ACCESS' (TYPE a, b or c)")
    major, colon, minor = parts[1].partition(":")
    for n in (major, minor):
        if not colon or not (n == "*" or (n.isascii() and n.isdigit())):
            raise CoveError(flag, "MAJOR:MINOR must be numbers or *")
    acc = parts[2]
    if not acc or set(acc) - set("rwm") or len(set(acc)) != len(acc):
        raise CoveError(flag, "ACCESS is made of r, w and m")
    return " ".join(parts)


def devices_and_cdi(o: RunOptions) -> tuple[list[dict[str, str]], list[str]]:
    """--device values: host device nodes, and CDI names (vendor.com/class=name), each
    checked now (a CDI name must resolve to a valid spec's device)."""
    if not o.devices and not o.device_cgroup_rules:
        return [], []
    from cove.engine import cdi
    host = [parse_device(d) for d in o.devices if not cdi.is_qualified(d)]
    names = [d for d in o.devices if cdi.is_qualified(d)]
    if names:
        reg = cdi.load()
        for n in names:
            reg.resolve(n, f"--device {n}")
    if (host or names or o.device_cgroup_rules) and o.isolation in ("vm", "gvisor"):
        flag = f"--device {o.devices[0]}" if o.devices else \
            f"--device-cgroup-rule {o.device_cgroup_rules[0]}"
        raise CoveError(flag, _handler_refusal(o.isolation, names))
    return host, names


def parse_annotations(specs: list[str]) -> dict[str, str]:
    """`--annotation KEY=VALUE` (podman's, docker 24's) → the OCI config's annotations;
    the CDI form (`cdi.k8s.io/NAME=vendor.com/class=dev,...`) is checked now, its
    devices resolved, as --device's are."""
    out: dict[str, str] = {}
    for s in specs:
        k, eq, v = s.partition("=")
        if not eq or not k:
            raise CoveError(f"--annotation {s}", "expected KEY=VALUE")
        if k == "io.cove.isolation":
            raise CoveError(f"--annotation {s}", "use --isolation (its checks are made "
                                                 "for the handler it names)")
        out[k] = v
    cdi_keys = {k: v for k, v in out.items() if k.startswith("cdi.k8s.io/")}
    if cdi_keys:
        from cove.engine import cdi
        reg = cdi.load()
        for n in cdi.names_from_annotations(cdi_keys):
            reg.resolve(n, f"--annotation {n}")
    return out


def _handler_refusal(isolation: str, cdi_names: list[str]) -> str:
    """Why a handler other than namespaces can't take host devices (docs/devices.md)."""
    if isolation == "vm":
        return ("the vm handler can't pass host devices: qemu needs the device's PCI "
                "function bound to vfio-pci on the host (VFIO, with an IOMMU), which "
                "cove's vm handler does not set up")
    if any(n.startswith("nvidia.com/") for n in cdi_names):
        import shutil
        import subprocess
        runsc = shutil.which("runsc")
        has = False
        if runsc:
            try:
                r = subprocess.run([runsc, "flags"], capture_output=True, text=True,
                                   timeout=10)
                has = "nvproxy" in r.stdout + r.stderr
            except (OSError, subprocess.SubprocessError):
                pass
        if not has:
            return ("gVisor passes NVIDIA GPUs only through runsc --nvproxy, which this "
                    "host's runsc does not have")
        return ("gVisor passes NVIDIA GPUs only through runsc --nvproxy, which cove's "
                "gvisor handler does not turn on yet")
    return "gVisor does not pass host device nodes (its kernel implements /dev itself)"
