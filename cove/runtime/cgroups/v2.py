"""cgroup v2 knobs: OCI linux.resources to unified files, stats, freeze, subtree control."""

from __future__ import annotations

import os
import time

from cove.errors import CoveError
from cove.runtime.cgroups import fs
from cove.runtime.cgroups.fs import get_bool, get_int, get_list, get_str, get_uint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _max(v: int) -> str:
    return "max" if v < 0 else str(v)


def enable_controllers(mountpoint: str, d: str, wanted: list[str], knob: str) -> None:
    """Enable `wanted` in cgroup.subtree_control of every ancestor of d, top-down."""
    rel = os.path.relpath(d, mountpoint)
    parts = [] if rel == "." else rel.split("/")
    cur = mountpoint
    for part in parts:
        have = set(fs.read_or(cur, "cgroup.subtree_control").split())
        missing = [c for c in wanted if c not in have]
        if missing:
            fs.write(cur, "cgroup.subtree_control", " ".join("+" + c for c in missing), knob)
        cur = os.path.join(cur, part)


def swap_value(swap: int, limit: int, where: str) -> int:
    """OCI swap is memory+swap; memory.swap.max is swap alone."""
    if swap in (0, -1):
        return swap
    if limit in (0, -1):
        raise CoveError(f"{where}.swap", "a swap limit needs a memory limit")
    if swap < limit:
        raise CoveError(f"{where}.swap", f"must be at least memory.limit ({limit})")
    return swap - limit


def set_memory(d: str, mem: dict[str, Any], where: str, update: bool = False) -> None:
    limit = get_int(mem, "limit", where) or 0
    swap = get_int(mem, "swap", where) or 0
    if limit == -1 and swap == 0:
        swap = -1
    # swap == limit asks for no swap at all: memory.swap.max 0, which must still be
    # written (0 itself is "not set" in the OCI value, not in the v2 one).
    set_swap = swap != 0
    swap = swap_value(swap, limit, where)
    if limit > 0 and get_bool(mem, "checkBeforeUpdate", where) and update:
        usage = fs.read_uint(d, "memory.current")
        if usage > limit:
            raise CoveError(
                f"{where}.limit", f"new limit {limit} is below the current usage {usage}"
            )
    # Swap first: memory.swap.max is independent of memory.max in v2, but a
    # missing swap file must fail before the limit changes.
    if set_swap:
        if not fs.has(d, "memory.swap.max"):
            if swap not in (-1, 0):  # no swap accounting: "none" and "any" both hold
                raise CoveError(f"{where}.swap", "swap accounting is not enabled")
        else:
            fs.write(d, "memory.swap.max", _max(swap), f"{where}.swap")
    if limit:
        fs.write(d, "memory.max", _max(limit), f"{where}.limit")
    res = get_int(mem, "reservation", where)
    if res:
        fs.write(d, "memory.low", _max(res), f"{where}.reservation")
    for key in ("kernel", "kernelTCP"):
        if get_int(mem, key, where):
            fs.warn(f"{where}.{key}: kernel memory limits do not exist in cgroup v2; ignored")
    sw = get_int(mem, "swappiness", where)
    if sw is not None and sw != -1:
        raise CoveError(f"{where}.swappiness", "memory.swappiness does not exist in cgroup v2")
    if get_bool(mem, "disableOOMKiller", where):
        raise CoveError(f"{where}.disableOOMKiller", "the OOM killer cannot be disabled in v2")
    if get_bool(mem, "useHierarchy", where) is False:
        raise CoveError(f"{where}.useHierarchy", "cgroup v2 is always hierarchical")


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] to cpu.weight [1, 10000], the conversion runc uses."""
    return 1 + ((shares - 2) * 9999) // 262142


def set_cpu(d: str, cpu: dict[str, Any], where: str, update: bool = False) -> None:
    shares = get_uint(cpu, "shares", where)
    if shares:
        fs.write(d, "cpu.weight", str(shares_to_weight(shares)), f"{where}.shares")
    quota = get_int(cpu, "quota", where) or 0
    period = get_uint(cpu, "period", where) or 0
    if quota or period:
        val = str(quota) if quota > 0 else "max"
        if period:
            # Without a period the kernel keeps the current one.
            val += f" {period}"
        fs.write(d, "cpu.max", val, f"{where}.quota" if quota else f"{where}.period")
    burst = get_uint(cpu, "burst", where)
    if burst is not None:
        fs.write(d, "cpu.max.burst", str(burst), f"{where}.burst")
    for key in ("realtimeRuntime", "realtimePeriod"):
        if get_int(cpu, key, where):
            raise CoveError(f"{where}.{key}", "realtime scheduling is not supported in cgroup v2")
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


def set_pids(d: str, pids: dict[str, Any], where: str, update: bool = False) -> None:
    limit = get_int(pids, "limit", where)
    if limit is not None:
        fs.write(d, "pids.max", str(limit) if limit > 0 else "max", f"{where}.limit")


def blkio_to_io_weight(w: int) -> int:
    """blkio weight [10, 1000] to io.weight [1, 10000]."""
    return 1 + (w - 10) * 9999 // 990


def _weight(d: str, dev: str, w: int, knob: str) -> None:
    prefix = f"{dev} " if dev else ""
    if fs.has(d, "io.bfq.weight"):
        # BFQ takes the v1 scale; "default N" sets the cgroup-wide weight.
        fs.write(d, "io.bfq.weight", prefix + str(w), knob)
    else:
        fs.write(d, "io.weight", (prefix or "default ") + str(blkio_to_io_weight(w)), knob)


IO_MAX = (
    ("throttleReadBpsDevice", "rbps"),
    ("throttleWriteBpsDevice", "wbps"),
    ("throttleReadIOPSDevice", "riops"),
    ("throttleWriteIOPSDevice", "wiops"),
)


def set_io(d: str, bio: dict[str, Any], where: str, update: bool = False) -> None:
    weight = get_uint(bio, "weight", where)
    if weight:
        _weight(d, "", weight, f"{where}.weight")
    if get_uint(bio, "leafWeight", where):
        raise CoveError(f"{where}.leafWeight", "leaf weights do not exist in cgroup v2")
    for i, wd in enumerate(get_list(bio, "weightDevice", where) or []):
        w = f"{where}.weightDevice[{i}]"
        dev = fs.device_key(wd, w)
        wv = get_uint(wd, "weight", w)
        if wv:
            _weight(d, dev, wv, f"{w}.weight")
        if get_uint(wd, "leafWeight", w):
            raise CoveError(f"{w}.leafWeight", "leaf weights do not exist in cgroup v2")
    for key, field in IO_MAX:
        for i, td in enumerate(get_list(bio, key, where) or []):
            w = f"{where}.{key}[{i}]"
            rate = get_uint(td, "rate", w) or 0
            fs.write(d, "io.max", f"{fs.device_key(td, w)} {field}={rate or 'max'}", w)


def set_hugetlb(d: str, limits: list[dict[str, Any]], where: str, update: bool = False) -> None:
    for i, hl in enumerate(limits):
        w = f"{where}[{i}]"
        size = get_str(hl, "pageSize", w)
        limit = get_uint(hl, "limit", w)
        if not size or limit is None:
            raise CoveError(w, "pageSize and limit are required")
        if not fs.has(d, f"hugetlb.{size}.max"):
            raise CoveError(f"{w}.pageSize", f"hugetlb page size {size} is not supported")
        fs.write(d, f"hugetlb.{size}.max", str(limit), f"{w}.limit")
        # Reservations are accounted separately; limit them alike, as runc does.
        if fs.has(d, f"hugetlb.{size}.rsvd.max"):
            fs.write(d, f"hugetlb.{size}.rsvd.max", str(limit), f"{w}.limit")


def set_unified(d: str, unified: dict[str, Any], where: str, controllers: list[str]) -> None:
    """Raw key/values; the key must name a file of an enabled controller."""
    for key, val in unified.items():
        w = f"{where}.{key}"
        if not isinstance(val, str):
            raise CoveError(w, "expected string")
        if "/" in key or key in (".", "..") or "." not in key:
            raise CoveError(w, "not a cgroup file name")
        ctrl = key.split(".", 1)[0]
        if not fs.has(d, key):
            if ctrl != "cgroup" and ctrl not in controllers:
                raise CoveError(w, f"the {ctrl} controller is not available in cgroup v2 here")
            raise CoveError(w, f"{key} does not exist")
        fs.write(d, key, val, w)


# Freeze.


def freeze(d: str, timeout: float = 5.0) -> None:
    """Freeze d and return once every task below it is frozen.

    cgroup.events' `frozen` alone is not enough where d holds tasks of its own and
    child cgroups too: Linux (seen on Debian's 6.1) sets it when either side is done
    (all descendants frozen, or all own tasks), and clears it again as the other side
    catches up. So each such mixed cgroup's own threads are checked by where they
    sleep (do_freezer_trap, or get_signal where that is inlined, as on 6.18); a
    kernel that shows neither gets the events' word at the deadline.
    """
    fs.write(d, "cgroup.freeze", "1", "freeze")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        flagged = _event(d, "frozen") == "1"
        if flagged and _subtree_frozen(d):
            return
        if time.monotonic() > deadline:
            if flagged:
                return
            fs.write(d, "cgroup.freeze", "0", "freeze")
            raise CoveError("freeze", f"{d} did not freeze within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


_TRAPPED = ("do_freezer_trap", "get_signal")


def _subtree_frozen(d: str) -> bool:
    """Every cgroup below d flagged frozen; the own threads of each mixed one trapped."""
    try:
        subs = [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return True  # d is gone: nothing left to freeze
    if not subs:
        return True
    for tid in fs.read_or(d, "cgroup.threads").split():
        try:
            with open(f"/proc/{tid}/wchan") as f:
                if f.read() not in _TRAPPED:
                    return False
        except OSError:
            pass  # exited meanwhile
    return all(_event(s, "frozen") == "1" and _subtree_frozen(s) for s in subs)


def thaw(d: str) -> None:
    fs.write(d, "cgroup.freeze", "0", "thaw")


def frozen(d: str) -> bool:
    return fs.read_or(d, "cgroup.freeze") == "1"


def _event(d: str, key: str, name: str = "cgroup.events") -> str:
    for line in fs.read_or(d, name).splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return v
    return ""


def oom_count(d: str) -> int:
    v = _event(d, "oom_kill", "memory.events")
    return int(v) if v else 0


# Stats, in the shape of runc's types.Stats.


def memory_stats(d: str, out: dict[str, Any]) -> None:
    raw = fs.read_kv(d, "memory.stat")
    mem = out["memory"]
    mem["cache"] = raw.get("file", 0)
    usage = fs.read_uint(d, "memory.current")
    limit = fs.read_uint(d, "memory.max")
    ev = fs.read_kv(d, "memory.events")
    mem["usage"] = {"limit": limit, "usage": usage, "max": fs.read_uint(d, "memory.peak"),
                    "failcnt": ev.get("max", 0)}
    if fs.has(d, "memory.swap.current"):
        # runc reports v2 swap as memory+swap, matching v1's memsw.
        swap_max = fs.read_uint(d, "memory.swap.max")
        both = fs.MAX_UINT64 if fs.MAX_UINT64 in (limit, swap_max) else limit + swap_max
        mem["swap"] = {"limit": both, "usage": usage + fs.read_uint(d, "memory.swap.current"),
                       "max": 0, "failcnt": 0}
    mem["raw"] = raw
    mem["use_hierarchy"] = True


def cpu_stats(d: str, out: dict[str, Any]) -> None:
    st = fs.read_kv(d, "cpu.stat")
    usage = out["cpu"]["usage"]
    usage["total"] = st.get("usage_usec", 0) * 1000
    usage["user"] = st.get("user_usec", 0) * 1000
    usage["kernel"] = st.get("system_usec", 0) * 1000
    out["cpu"]["throttling"] = {
        "periods": st.get("nr_periods", 0),
        "throttledPeriods": st.get("nr_throttled", 0),
        "throttledTime": st.get("throttled_usec", 0) * 1000,
    }


def pids_stats(d: str, out: dict[str, Any]) -> None:
    lim = fs.read_uint(d, "pids.max")
    out["pids"] = {"current": fs.read_uint(d, "pids.current"),
                   "limit": 0 if lim == fs.MAX_UINT64 else lim}


def io_stats(d: str, out: dict[str, Any]) -> None:
    sbytes: list[dict[str, Any]] = []
    sios: list[dict[str, Any]] = []
    for line in fs.read_or(d, "io.stat").splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        major, _, minor = f[0].partition(":")
        kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
        for key, op, dest in (("rbytes", "Read", sbytes), ("wbytes", "Write", sbytes),
                              ("rios", "Read", sios), ("wios", "Write", sios)):
            if key in kv:
                dest.append({"major": int(major), "minor": int(minor), "op": op,
                             "value": int(kv[key])})
    out["blkio"]["ioServiceBytesRecursive"] = sbytes
    out["blkio"]["ioServicedRecursive"] = sios


def hugetlb_stats(d: str, out: dict[str, Any]) -> None:
    for name in sorted(os.listdir(d)):
        if name.startswith("hugetlb.") and name.endswith(".max") and ".rsvd." not in name:
            size = name[len("hugetlb.") : -len(".max")]
            ev = fs.read_kv(d, f"hugetlb.{size}.events")
            out["hugetlb"][size] = {"usage": fs.read_uint(d, f"hugetlb.{size}.current"),
                                    "max": 0, "failcnt": ev.get("max", 0)}


STATS = {
    "memory": memory_stats,
    "cpu": cpu_stats,
    "pids": pids_stats,
    "io": io_stats,
    "hugetlb": hugetlb_stats,
}
