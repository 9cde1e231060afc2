"""cgroup v1 knobs: OCI linux.resources to v1 files, stats, and the freezer.

Each setter takes the directory of the container's cgroup in the hierarchy
that serves the controller, the OCI section, and the section's JSON path.
"""

from __future__ import annotations

import errno
import os
import time

from cove.errors import CoveError
from cove.runtime.cgroups import fs
from cove.runtime.cgroups.fs import get_bool, get_int, get_list, get_str, get_uint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MEMSW = "memory.memsw.limit_in_bytes"


def _limit(v: int) -> str:
    return "-1" if v < 0 else str(v)


def set_memory(d: str, mem: dict[str, Any], where: str, update: bool = False) -> None:
    """memory.*: limit and swap in the order the kernel accepts (memsw >= limit)."""
    limit = get_int(mem, "limit", where) or 0
    swap = get_int(mem, "swap", where) or 0
    has_memsw = fs.has(d, MEMSW)
    if limit == -1 and swap == 0 and has_memsw:
        # Unlimited memory with swap left alone would trip memsw < limit.
        swap = -1
    if swap and not has_memsw:
        if swap != -1:
            raise CoveError(f"{where}.swap", "swap accounting is not enabled (no " + MEMSW + ")")
        swap = 0
    if limit > 0 and get_bool(mem, "checkBeforeUpdate", where) and update:
        usage = fs.read_uint(d, "memory.usage_in_bytes")
        if usage > limit:
            raise CoveError(
                f"{where}.limit", f"new limit {limit} is below the current usage {usage}"
            )
    swap_first = False
    if limit and swap:
        cur = fs.read_uint(d, "memory.limit_in_bytes")
        # Raising: memsw must grow first; lowering: the limit must shrink first.
        swap_first = swap == -1 or cur < swap
    if swap_first:
        _set_swap(d, swap, f"{where}.swap")
    if limit:
        _set_limit(d, limit, f"{where}.limit")
    if swap and not swap_first:
        _set_swap(d, swap, f"{where}.swap")
    reservation = get_int(mem, "reservation", where)
    if reservation:
        fs.write(d, "memory.soft_limit_in_bytes", _limit(reservation), f"{where}.reservation")
    kernel = get_int(mem, "kernel", where)
    if kernel:
        # Deprecated upstream: new kernels accept and ignore it, old ones need it.
        if fs.has(d, "memory.kmem.limit_in_bytes"):
            fs.write(d, "memory.kmem.limit_in_bytes", _limit(kernel), f"{where}.kernel")
        else:
            fs.warn(f"{where}.kernel: kernel memory accounting is not available; ignored")
    ktcp = get_int(mem, "kernelTCP", where)
    if ktcp:
        fs.write(d, "memory.kmem.tcp.limit_in_bytes", _limit(ktcp), f"{where}.kernelTCP")
    swappiness = get_int(mem, "swappiness", where)
    if swappiness is not None and swappiness != -1:
        if not 0 <= swappiness <= 100:
            raise CoveError(f"{where}.swappiness", f"invalid value {swappiness}: range is 0-100")
        fs.write(d, "memory.swappiness", str(swappiness), f"{where}.swappiness")
    if get_bool(mem, "disableOOMKiller", where):
        fs.write(d, "memory.oom_control", "1", f"{where}.disableOOMKiller")
    hier = get_bool(mem, "useHierarchy", where)
    if hier is not None:
        want = "1" if hier else "0"
        # Newer kernels fix it at 1 and refuse any write; only write a change.
        if fs.read_or(d, "memory.use_hierarchy") != want:
            fs.write(d, "memory.use_hierarchy", want, f"{where}.useHierarchy")


def _errno(e: CoveError) -> int | None:
    return e.__cause__.errno if isinstance(e.__cause__, OSError) else None


def _set_limit(d: str, limit: int, knob: str) -> None:
    try:
        fs.write(d, "memory.limit_in_bytes", _limit(limit), knob)
    except CoveError as e:
        if _errno(e) == errno.EBUSY:
            usage = fs.read_uint(d, "memory.usage_in_bytes")
            peak = fs.read_uint(d, "memory.max_usage_in_bytes")
            raise CoveError(
                knob, f"unable to set memory limit to {limit} (current usage: {usage}, "
                f"peak usage: {peak})"
            ) from None
        memsw = fs.read_uint(d, MEMSW) if fs.has(d, MEMSW) else 0
        if _errno(e) == errno.EINVAL and 0 < memsw < limit:
            # A live update of the limit alone (runc fails the same way, less clearly).
            raise CoveError(knob, f"memory limit {limit} is above the memory+swap limit "
                            f"{memsw}: raise swap too") from None
        raise


def _set_swap(d: str, swap: int, knob: str) -> None:
    try:
        fs.write(d, MEMSW, _limit(swap), knob)
    except CoveError as e:
        cur = fs.read_uint(d, "memory.limit_in_bytes")
        if _errno(e) == errno.EINVAL and 0 < swap < cur:
            raise CoveError(knob, f"memory+swap limit {swap} is below the memory limit "
                            f"{cur}: lower the limit too") from None
        raise


def set_cpu(d: str, cpu: dict[str, Any], where: str, update: bool = False) -> None:
    """cpu.*: shares, CFS quota/period/burst, RT runtime/period, idle."""
    shares = get_uint(cpu, "shares", where)
    if shares:
        fs.write(d, "cpu.shares", str(shares), f"{where}.shares")
    period = get_uint(cpu, "period", where)
    quota = get_int(cpu, "quota", where)
    if period:
        try:
            fs.write(d, "cpu.cfs_period_us", str(period), f"{where}.period")
        except CoveError as e:
            # A shorter period can be refused while the old quota exceeds it:
            # write the quota first, then retry.
            if not quota or not isinstance(e.__cause__, OSError):
                raise
            fs.write(d, "cpu.cfs_quota_us", str(quota), f"{where}.quota")
            fs.write(d, "cpu.cfs_period_us", str(period), f"{where}.period")
    if quota:
        fs.write(d, "cpu.cfs_quota_us", str(quota), f"{where}.quota")
    burst = get_uint(cpu, "burst", where)
    if burst is not None:
        fs.write(d, "cpu.cfs_burst_us", str(burst), f"{where}.burst")
    rt_period = get_uint(cpu, "realtimePeriod", where)
    if rt_period:
        fs.write(d, "cpu.rt_period_us", str(rt_period), f"{where}.realtimePeriod")
    rt_runtime = get_int(cpu, "realtimeRuntime", where)
    if rt_runtime:
        fs.write(d, "cpu.rt_runtime_us", str(rt_runtime), f"{where}.realtimeRuntime")
    idle = get_int(cpu, "idle", where)
    if idle is not None:
        fs.write(d, "cpu.idle", str(idle), f"{where}.idle")


def set_cpuset(d: str, cpu: dict[str, Any], where: str, update: bool = False) -> None:
    cpus = get_str(cpu, "cpus", where)
    if cpus:
        fs.write(d, "cpuset.cpus", cpus, f"{where}.cpus")
    mems = get_str(cpu, "mems", where)
    if mems:
        fs.write(d, "cpuset.mems", mems, f"{where}.mems")


def init_cpuset(mountpoint: str, d: str) -> None:
    """Copy cpuset.cpus/mems from parent to child, top-down: v1 refuses tasks
    in a cpuset whose cpus or mems are empty."""
    rel = os.path.relpath(d, mountpoint)
    cur = mountpoint
    for part in [] if rel == "." else rel.split("/"):
        parent, cur = cur, os.path.join(cur, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if fs.read_or(cur, name) == "":
                fs.write(cur, name, fs.read_or(parent, name), "cgroup.cpuset")


def set_pids(d: str, pids: dict[str, Any], where: str, update: bool = False) -> None:
    limit = get_int(pids, "limit", where)
    if limit is not None:
        fs.write(d, "pids.max", str(limit) if limit > 0 else "max", f"{where}.limit")


def _weight_file(d: str, plain: str, bfq: str) -> str:
    # runc prefers the BFQ knob where the scheduler offers it.
    return bfq if fs.has(d, bfq) else plain


def set_blkio(d: str, bio: dict[str, Any], where: str, update: bool = False) -> None:
    weight = get_uint(bio, "weight", where)
    if weight:
        fs.write(d, _weight_file(d, "blkio.weight", "blkio.bfq.weight"), str(weight),
                 f"{where}.weight")
    leaf = get_uint(bio, "leafWeight", where)
    if leaf:
        fs.write(d, "blkio.leaf_weight", str(leaf), f"{where}.leafWeight")
    for i, wd in enumerate(get_list(bio, "weightDevice", where) or []):
        w = f"{where}.weightDevice[{i}]"
        dev = fs.device_key(wd, w)
        wv = get_uint(wd, "weight", w)
        if wv:
            name = _weight_file(d, "blkio.weight_device", "blkio.bfq.weight_device")
            fs.write(d, name, f"{dev} {wv}", f"{w}.weight")
        lw = get_uint(wd, "leafWeight", w)
        if lw:
            fs.write(d, "blkio.leaf_weight_device", f"{dev} {lw}", f"{w}.leafWeight")
    for key, name in THROTTLES:
        for i, td in enumerate(get_list(bio, key, where) or []):
            w = f"{where}.{key}[{i}]"
            rate = get_uint(td, "rate", w) or 0
            fs.write(d, name, f"{fs.device_key(td, w)} {rate}", w)


THROTTLES = (
    ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
    ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
    ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
    ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
)


def set_hugetlb(d: str, limits: list[dict[str, Any]], where: str, update: bool = False) -> None:
    for i, hl in enumerate(limits):
        w = f"{where}[{i}]"
        size = get_str(hl, "pageSize", w)
        limit = get_uint(hl, "limit", w)
        if not size or limit is None:
            raise CoveError(w, "pageSize and limit are required")
        name = f"hugetlb.{size}.limit_in_bytes"
        if not fs.has(d, name):
            raise CoveError(f"{w}.pageSize", f"hugetlb page size {size} is not supported")
        fs.write(d, name, str(limit), f"{w}.limit")


def set_net_cls(d: str, classid: int, knob: str) -> None:
    fs.write(d, "net_cls.classid", str(classid), knob)


def set_net_prio(d: str, prios: list[dict[str, Any]], where: str) -> None:
    for i, p in enumerate(prios):
        w = f"{where}[{i}]"
        name = get_str(p, "name", w)
        prio = get_uint(p, "priority", w)
        if not name or prio is None:
            raise CoveError(w, "name and priority are required")
        fs.write(d, "net_prio.ifpriomap", f"{name} {prio}", w)


def device_rule(dev: dict[str, Any], w: str) -> tuple[bool, str]:
    """(allow, "type major:minor access") for one linux.resources.devices entry."""
    allow = get_bool(dev, "allow", w)
    if allow is None:
        raise CoveError(f"{w}.allow", "expected boolean")
    typ = get_str(dev, "type", w) or "a"
    if typ not in ("a", "b", "c"):
        raise CoveError(f"{w}.type", f"invalid device type {typ!r}")
    major = get_int(dev, "major", w)
    minor = get_int(dev, "minor", w)
    access = get_str(dev, "access", w) or "rwm"
    if any(c not in "rwm" for c in access):
        raise CoveError(f"{w}.access", f"invalid access {access!r}")
    mj = "*" if major is None or major < 0 else str(major)
    mn = "*" if minor is None or minor < 0 else str(minor)
    return allow, f"{typ} {mj}:{mn} {access}"


def set_devices(d: str, devices: list[dict[str, Any]], where: str, update: bool = False) -> None:
    """devices.allow / devices.deny, written in the order given."""
    for i, dev in enumerate(devices):
        w = f"{where}[{i}]"
        allow, rule = device_rule(dev, w)
        fs.write(d, "devices.allow" if allow else "devices.deny", rule, w)


def set_rdma(d: str, rdma: dict[str, Any], where: str, update: bool = False) -> None:
    for dev, lim in rdma.items():
        w = f"{where}.{dev}"
        if not isinstance(lim, dict):
            raise CoveError(w, "expected object")
        parts = [dev]
        h = get_uint(lim, "hcaHandles", w)
        o = get_uint(lim, "hcaObjects", w)
        if h is not None:
            parts.append(f"hca_handle={h}")
        if o is not None:
            parts.append(f"hca_object={o}")
        if len(parts) > 1:
            fs.write(d, "rdma.max", " ".join(parts), w)


# Freezer.


def freeze(d: str, timeout: float = 5.0) -> None:
    """FROZEN, waiting until every task is stopped (bounded)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        fs.write(d, "freezer.state", "FROZEN", "freeze")
        if fs.read(d, "freezer.state") == "FROZEN":
            return
        if time.monotonic() > deadline:
            fs.write(d, "freezer.state", "THAWED", "freeze")
            raise CoveError("freeze", f"{d} did not reach FROZEN within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def thaw(d: str) -> None:
    fs.write(d, "freezer.state", "THAWED", "thaw")


def frozen(d: str) -> bool:
    return fs.read_or(d, "freezer.state") in ("FROZEN", "FREEZING")


def oom_count(d: str) -> int:
    for line in fs.read_or(d, "memory.oom_control").splitlines():
        k, _, v = line.partition(" ")
        if k == "oom_kill":
            return int(v)
    return 0


# Stats, in the shape of runc's types.Stats.


def _mem_entry(d: str, prefix: str) -> dict[str, int]:
    return {
        "limit": fs.read_uint(d, f"{prefix}.limit_in_bytes"),
        "usage": fs.read_uint(d, f"{prefix}.usage_in_bytes"),
        "max": fs.read_uint(d, f"{prefix}.max_usage_in_bytes"),
        "failcnt": fs.read_uint(d, f"{prefix}.failcnt"),
    }


def memory_stats(d: str, out: dict[str, Any]) -> None:
    raw = fs.read_kv(d, "memory.stat")
    mem = out["memory"]
    mem["cache"] = raw.get("cache", 0)
    mem["usage"] = _mem_entry(d, "memory")
    if fs.has(d, "memory.memsw.usage_in_bytes"):
        mem["swap"] = _mem_entry(d, "memory.memsw")
    if fs.has(d, "memory.kmem.usage_in_bytes"):
        mem["kernel"] = _mem_entry(d, "memory.kmem")
    if fs.has(d, "memory.kmem.tcp.usage_in_bytes"):
        mem["kernelTCP"] = _mem_entry(d, "memory.kmem.tcp")
    mem["raw"] = raw
    mem["use_hierarchy"] = fs.read_or(d, "memory.use_hierarchy") == "1"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def cpuacct_stats(d: str, out: dict[str, Any]) -> None:
    usage = out["cpu"]["usage"]
    usage["total"] = fs.read_uint(d, "cpuacct.usage")
    usage["percpu"] = _ints(fs.read_or(d, "cpuacct.usage_percpu"))
    # cpuacct.stat counts clock ticks; runc reports nanoseconds.
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    st = fs.read_kv(d, "cpuacct.stat")
    usage["kernel"] = st.get("system", 0) * tick_ns
    usage["user"] = st.get("user", 0) * tick_ns
    pk = _ints(fs.read_or(d, "cpuacct.usage_percpu_sys"))
    pu = _ints(fs.read_or(d, "cpuacct.usage_percpu_user"))
    if pk:
        usage["percpu_kernel"] = pk
    if pu:
        usage["percpu_user"] = pu


def cpu_stats(d: str, out: dict[str, Any]) -> None:
    st = fs.read_kv(d, "cpu.stat")
    out["cpu"]["throttling"] = {
        "periods": st.get("nr_periods", 0),
        "throttledPeriods": st.get("nr_throttled", 0),
        "throttledTime": st.get("throttled_time", 0),
    }


def pids_stats(d: str, out: dict[str, Any]) -> None:
    lim = fs.read_uint(d, "pids.max")
    # runc reports an unlimited pids.max as 0.
    out["pids"] = {"current": fs.read_uint(d, "pids.current"),
                   "limit": 0 if lim == fs.MAX_UINT64 else lim}


def _blkio_entries(d: str, name: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for line in fs.read_or(d, name).splitlines():
        f = line.split()
        if len(f) != 3 or ":" not in f[0]:
            continue  # the "Total N" line
        major, _, minor = f[0].partition(":")
        entries.append(
            {"major": int(major), "minor": int(minor), "op": f[1], "value": int(f[2])}
        )
    return entries


def blkio_stats(d: str, out: dict[str, Any]) -> None:
    # CFQ, then BFQ, then the throttle counters (always present), as runc.
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        if fs.has(d, prefix + "io_service_bytes_recursive"):
            break
    bio = out["blkio"]
    bio["ioServiceBytesRecursive"] = _blkio_entries(d, prefix + "io_service_bytes_recursive")
    bio["ioServicedRecursive"] = _blkio_entries(d, prefix + "io_serviced_recursive")
    if prefix == "blkio.":
        for key, name in (
            ("ioQueueRecursive", "io_queued_recursive"),
            ("ioServiceTimeRecursive", "io_service_time_recursive"),
            ("ioWaitTimeRecursive", "io_wait_time_recursive"),
            ("ioMergedRecursive", "io_merged_recursive"),
            ("ioTimeRecursive", "time_recursive"),
            ("sectorsRecursive", "sectors_recursive"),
        ):
            bio[key] = _blkio_entries(d, prefix + name)


def hugetlb_stats(d: str, out: dict[str, Any]) -> None:
    for name in sorted(os.listdir(d)):
        if name.startswith("hugetlb.") and name.endswith(".limit_in_bytes"):
            size = name[len("hugetlb.") : -len(".limit_in_bytes")]
            out["hugetlb"][size] = {
                "usage": fs.read_uint(d, f"hugetlb.{size}.usage_in_bytes"),
                "max": fs.read_uint(d, f"hugetlb.{size}.max_usage_in_bytes"),
                "failcnt": fs.read_uint(d, f"hugetlb.{size}.failcnt"),
            }


STATS = {
    "memory": memory_stats,
    "cpuacct": cpuacct_stats,
    "cpu": cpu_stats,
    "pids": pids_stats,
    "blkio": blkio_stats,
    "hugetlb": hugetlb_stats,
}
