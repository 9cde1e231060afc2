"""linux.resources as systemd unit properties, the way runc's systemd driver maps them.

Each property is (name, (D-Bus signature, value)), ready for StartTransientUnit or
SetUnitProperties. What systemd has no property for (hugetlb, network, rdma, blkio
device limits, most of `unified`) is not here: the driver writes those files itself
in the scope's cgroup once systemd made it, as runc does.
"""

from __future__ import annotations

from cove.errors import CoveError
from cove.runtime.cgroups import fs
from cove.runtime.cgroups.fs import MAX_UINT64

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Prop = tuple[str, tuple[str, Any]]

R = "linux.resources"
DEFAULT_CPU_PERIOD = 100000


def _t(name: str, v: int) -> Prop:
    return (name, ("t", MAX_UINT64 if v < 0 else v))


def cpu_bits(spec: str, where: str) -> bytes:
    """A cpuset list ("0-3,7") as systemd's AllowedCPUs bitmask: bit n of byte n//8."""
    cpus: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise CoveError(where, f"invalid cpu list {spec!r}") from None
        if a < 0 or b < a:
            raise CoveError(where, f"invalid cpu list {spec!r}")
        cpus.update(range(a, b + 1))
    out = bytearray((max(cpus) // 8 + 1) if cpus else 0)
    for c in cpus:
        out[c // 8] |= 1 << (c % 8)
    return bytes(out)


def cpu_quota(quota: int | None, period: int | None) -> list[Prop]:
    """CPUQuotaPerSecUSec (and CPUQuotaPeriodUSec): runc's addCpuQuota.

    systemd keeps the quota as a whole percentage of a CPU, so a quota that is not a
    multiple of 10 ms a second is rounded up (the cfs_quota_us the container asked
    for then still fits under it)."""
    q, p = quota or 0, period or 0
    out: list[Prop] = []
    if p:
        out.append(("CPUQuotaPeriodUSec", ("t", p)))
    if q or p:
        per_sec = MAX_UINT64
        if q > 0:
            per_sec = q * 1000000 // (p or DEFAULT_CPU_PERIOD)
            if per_sec % 10000:
                per_sec = (per_sec // 10000 + 1) * 10000
        out.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return out


def _cpuset(cpu: dict[str, Any], where: str) -> list[Prop]:
    out: list[Prop] = []
    for key, prop in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
        v = fs.get_str(cpu, key, where)
        if v:
            out.append((prop, ("ay", cpu_bits(v, f"{where}.{key}"))))
    return out


def _unified(uni: dict[str, Any], where: str) -> list[Prop]:
    """runc's unifiedResToSystemdProps: the keys systemd has a property for."""
    out: list[Prop] = []
    for key, raw in uni.items():
        knob = f"{where}.{key}"
        v = str(raw).strip()

        def num(s: str, knob: str = knob) -> int:
            if s == "max":
                return -1
            try:
                return int(s)
            except ValueError:
                raise CoveError(knob, f"expected a number or max, got {s!r}") from None

        if key == "cpu.weight":
            out.append(_t("CPUWeight", num(v)))
        elif key == "cpu.max":
            parts = v.split()
            q = num(parts[0]) if parts else -1
            p = num(parts[1]) if len(parts) > 1 else 0
            # "max" is no quota: cpu_quota's infinity (a period alone asks for it)
            out += cpu_quota(q, p) if q > 0 else cpu_quota(0, p or DEFAULT_CPU_PERIOD)
        elif key in ("cpuset.cpus", "cpuset.mems"):
            prop = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
            out.append((prop, ("ay", cpu_bits(v, knob))))
        elif key in ("memory.min", "memory.low", "memory.high", "memory.max"):
            out.append(_t("Memory" + key[7:].capitalize(), num(v)))
        elif key == "memory.swap.max":
            out.append(_t("MemorySwapMax", num(v)))
        elif key == "pids.max":
            out.append(_t("TasksMax", num(v)))
    return out


def _device_group(typ: str, major: int) -> str | None:
    """systemd's name for all devices of a major ("char-pts"), from /proc/devices."""
    section = "Character devices:" if typ == "c" else "Block devices:"
    try:
        with open("/proc/devices") as f:
            text = f.read()
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        if line.endswith(":"):
            inside = line == section
        elif inside and line.split()[:1] == [str(major)]:
            return f"{'char' if typ == 'c' else 'block'}-{line.split()[1]}"
    return None


def devices(devs: list[Any], where: str) -> list[Prop]:
    """DevicePolicy and DeviceAllow for linux.resources.devices (runc's
    systemdProperties): without them systemd, on its next look at the unit (an
    update, a daemon-reload), writes `a *:* rwm` to a v1 devices cgroup.

    The rules are folded in order into a default and its exceptions, as the kernel
    does. systemd knows only allow-lists: a deny-list that is not "allow all" becomes
    deny-all here (the driver writes the real rules to the cgroup itself), as runc."""
    from cove.runtime.cgroups.v1 import device_rule

    default_allow = True  # the kernel's and OCI's start: everything allowed
    exceptions: list[str] = []
    for i, dev in enumerate(devs):
        if not isinstance(dev, dict):
            raise CoveError(f"{where}[{i}]", "expected object")
        allow, rule = device_rule(dev, f"{where}[{i}]")
        if rule.startswith("a *:* "):  # everything: a new default
            default_allow, exceptions = allow, []
        elif allow == default_allow:
            exceptions = [e for e in exceptions if e != rule]
        elif rule not in exceptions:
            exceptions.append(rule)
    if default_allow and not exceptions:
        return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    allows: list[tuple[str, str]] = []
    for rule in [] if default_allow else exceptions:
        typ, mm, access = rule.split()
        major, minor = mm.split(":")
        if typ == "a":
            # "a" with a number: both kinds, as the kernel reads it
            kinds = ["b", "c"]
        else:
            kinds = [typ]
        for k in kinds:
            name = "char" if k == "c" else "block"
            if major == "*":
                if minor != "*":
                    continue  # "*:n": systemd has no such rule (runc skips it too)
                path: str | None = f"{name}-*"
            elif minor == "*":
                path = _device_group(k, int(major))
            else:
                path = f"/dev/{name}/{major}:{minor}"
            if path is not None:
                allows.append((path, access))
    # An empty DeviceAllow first: it clears what the unit had (on an update).
    return [("DeviceAllow", ("a(ss)", [])), ("DevicePolicy", ("s", "strict")),
            ("DeviceAllow", ("a(ss)", allows))]


def properties(resources: dict[str, Any] | None, v2: bool) -> list[Prop]:
    """The resource properties for linux.resources (v2: a unified host's names)."""
    if not resources:
        return []
    if not isinstance(resources, dict):
        raise CoveError(R, "expected object")
    out: list[Prop] = []
    mem = fs.get_dict(resources, "memory", R) or {}
    where = f"{R}.memory"
    limit = fs.get_int(mem, "limit", where) or 0
    if limit:
        out.append(_t("MemoryMax" if v2 else "MemoryLimit", limit))
    if v2:
        low = fs.get_int(mem, "reservation", where) or 0
        if low:
            out.append(_t("MemoryLow", low))
        swap = fs.get_int(mem, "swap", where) or 0
        if swap:
            from cove.runtime.cgroups import v2 as cg2

            out.append(_t("MemorySwapMax", cg2.swap_value(swap, limit, where)))
    cpu = fs.get_dict(resources, "cpu", R) or {}
    where = f"{R}.cpu"
    shares = fs.get_uint(cpu, "shares", where) or 0
    if shares:
        if v2:
            from cove.runtime.cgroups import v2 as cg2

            out.append(_t("CPUWeight", cg2.shares_to_weight(shares)))
        else:
            out.append(_t("CPUShares", shares))
    out += cpu_quota(fs.get_int(cpu, "quota", where), fs.get_uint(cpu, "period", where))
    out += _cpuset(cpu, where)
    bio = fs.get_dict(resources, "blockIO", R) or {}
    weight = fs.get_uint(bio, "weight", f"{R}.blockIO") or 0
    if weight and not v2:
        out.append(_t("BlockIOWeight", weight))
    pids = fs.get_dict(resources, "pids", R) or {}
    plimit = fs.get_int(pids, "limit", f"{R}.pids") or 0
    if plimit > 0 or plimit == -1:
        out.append(_t("TasksMax", plimit))
    devs = resources.get("devices")
    if devs is not None:
        if not isinstance(devs, list):
            raise CoveError(f"{R}.devices", "expected array")
        out += devices(devs, f"{R}.devices")
    uni = fs.get_dict(resources, "unified", R)
    if uni and v2:
        out += _unified(uni, f"{R}.unified")
    return out


def unit_properties(description: str, slice_: str | None, pid: int | None,
                    v2: bool) -> list[Prop]:
    """The unit's own properties, as runc sets them for a container's scope."""
    out: list[Prop] = [("Description", ("s", description))]
    if slice_:
        out.append(("Slice", ("s", slice_)))
    if pid is not None:
        out.append(("PIDs", ("au", [pid])))
    out += [
        # Delegate: the container's own cgroup tree below the scope is its own, systemd
        # stays out of it (runc sets it wherever systemd knows it).
        ("Delegate", ("b", True)),
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("IOAccounting" if v2 else "BlockIOAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        # No implicit ordering after basic.target or conflict with shutdown.target:
        # a container is stopped by its engine, not by systemd's default dependencies.
        ("DefaultDependencies", ("b", False)),
    ]
    return out
