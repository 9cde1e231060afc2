"""Autoscaling (`x-cove-autoscale: {min, max, cpu: 70%}`, `cove autoscale`) and placement.

Semantics, after Kubernetes' HorizontalPodAutoscaler:
- the metric is the replicas' average CPU use, as a fraction of one CPU (docker
  stats' CPU %: 100% is one core busy), measured from each replica's cgroup between
  two samples (v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec);
- each sample recommends `ceil(replicas * average / target)` replicas (none within
  10% of the target: no change for noise);
- scaling up follows the newest recommendation at once (the up window, 0 s by
  default, takes the smallest over it), at most doubling (or +4) per step;
- scaling down waits for the down window (`window`, 60 s by default; HPA's 300 s is
  long for a single host) to be covered by samples and takes the *largest*
  recommendation in it: one quiet sample after a busy minute shrinks nothing, and new
  replicas that start idle do not pull the count straight back down (no flapping);
- the count stays within [min, max].

`decide()` is pure (history, current count, spec -> count and reason) so that it can be
tested on any trace; `Tracker` keeps the samples between the reconciler's passes (it
runs in a fresh child each time, so they live in a file beside the project's state).
`fits()` is placement: whether `count` more replicas' reservations fit what the host
has left.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from cove.errors import CoveError

DEFAULT_WINDOW = 60.0
TOLERANCE = 0.1
HISTORY_KEEP = 600.0  # seconds of samples kept (at least; more for a longer window)


class Sample(NamedTuple):
    """One measurement: when, the replicas' average CPU use (1.0 = one CPU), and how
    many replicas there were."""

    t: float
    cpu: float
    replicas: int


# -- the spec ----------------------------------------------------------------------------

def _percent(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise CoveError(where, "expected a percentage such as 70%")
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str) and v.strip().endswith("%"):
        try:
            f = float(v.strip()[:-1])
        except ValueError:
            raise CoveError(where, f"{v!r} is not a percentage such as 70%") from None
    else:
        raise CoveError(where, f"{v!r} is not a percentage such as 70%")
    if not 0 < f <= 10000 or math.isnan(f):
        raise CoveError(where, f"{v!r} must be above 0%")
    return f / 100


def _seconds(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        for suf in ("ms", "s", "m", "h"):
            if s.endswith(suf):
                with contextlib.suppress(ValueError):
                    f = float(s[:-len(suf)]) * mult[suf]
                    if f >= 0:
                        return f
                break
    raise CoveError(where, f"{v!r} is not a duration such as 30s")


def _count(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise CoveError(where, f"{v!r} is not a whole number >= 0")
    return v


def parse_spec(raw: Any, where: str = "x-cove-autoscale") -> dict[str, Any]:
    """The normalized spec ({min, max, cpu (fraction), window, up_window} ) of a
    compose `x-cove-autoscale` mapping or the CLI's flags; errors name the key path."""
    if not isinstance(raw, dict):
        raise CoveError(where, "expected a mapping with min, max and cpu")
    unknown = set(raw) - {"min", "max", "cpu", "window", "up_window"}
    if unknown:
        raise CoveError(f"{where}.{sorted(unknown)[0]}", "unknown key (min, max, cpu, "
                                                         "window, up_window)")
    for k in ("min", "max", "cpu"):
        if k not in raw:
            raise CoveError(f"{where}.{k}", "required")
    lo, hi = _count(raw["min"], f"{where}.min"), _count(raw["max"], f"{where}.max")
    if hi < 1:
        raise CoveError(f"{where}.max", "must be at least 1")
    if lo > hi:
        raise CoveError(f"{where}.min", f"{lo} is above max ({hi})")
    return {"min": lo, "max": hi, "cpu": _percent(raw["cpu"], f"{where}.cpu"),
            "window": _seconds(raw.get("window", DEFAULT_WINDOW), f"{where}.window"),
            "up_window": _seconds(raw.get("up_window", 0), f"{where}.up_window")}


# -- the decision ------------------------------------------------------------------------

def recommend(s: Sample, target: float) -> int:
    """HPA's desired count for one sample."""
    if s.replicas <= 0:
        return 0
    ratio = s.cpu / target
    if abs(ratio - 1) <= TOLERANCE:
        return s.replicas
    return max(1, math.ceil(s.replicas * ratio - 1e-9))


def decide(history: Sequence[Sample], current: int, spec: dict[str, Any],
           now: float | None = None) -> tuple[int, str]:
    """The replica count for now and why (the count may be `current`)."""
    lo, hi, target = spec["min"], spec["max"], spec["cpu"]
    if current < lo:
        return lo, f"{current} replicas is below the autoscale minimum {lo}"
    if current > hi:
        return hi, f"{current} replicas is above the autoscale maximum {hi}"
    if not history:
        return current, "no CPU samples yet"
    now = history[-1].t if now is None else now
    last = history[-1]
    recs = [(s, recommend(s, target)) for s in history]

    up_from = now - float(spec.get("up_window", 0))
    up = min(r for s, r in recs if s.t >= up_from or s is last)
    if up > current:
        n = min(up, max(2 * current, current + 4), hi)
        reps = f"{last.replicas} replica" + ("s" if last.replicas != 1 else "")
        return n, (f"average CPU {last.cpu:.0%} over {reps} is above the target "
                   f"{target:.0%}: {current} -> {n}")

    window = float(spec.get("window", DEFAULT_WINDOW))
    if history[0].t > now - window:
        return current, f"waiting for {window:g}s of samples before scaling down"
    inside = [(s, r) for s, r in recs if s.t >= now - window]
    down = max(r for _s, r in inside)
    if down < current:
        n = max(down, lo)
        if n < current:
            peak = max(s.cpu for s, _r in inside)
            return n, (f"average CPU at most {peak:.0%} over the last {window:g}s, below "
                       f"the target {target:.0%}: {current} -> {n}")
    return current, f"average CPU {last.cpu:.0%}, target {target:.0%}"


# -- measuring ---------------------------------------------------------------------------

_hier: list[Any] | None = None


def _hierarchies() -> list[Any]:
    global _hier
    if _hier is None:
        from cove.runtime.cgroups.detect import find_hierarchies
        _hier = find_hierarchies()[1]
    return _hier


def cpu_ns(pid: int) -> int | None:
    """CPU time so far of `pid`'s cgroup (a container's: its init's), in ns; None when
    the process or its cgroup is gone. v1 (and hybrid hosts): cpuacct.usage; v2:
    cpu.stat's usage_usec (there with or without the cpu controller)."""
    from cove.runtime.cgroups.detect import parse_proc_cgroup
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            own = parse_proc_cgroup(f.read())
    except OSError:
        return None
    hs = _hierarchies()
    order = [h for h in hs if h.version == 1 and "cpuacct" in h.controllers] + \
        [h for h in hs if h.version == 2]
    for h in order:
        path = own.get("cpuacct" if h.version == 1 else "")
        if path is None:
            continue
        if h.root != "/" and (path == h.root or path.startswith(h.root + "/")):
            path = path[len(h.root):] or "/"
        d = h.mountpoint.rstrip("/") + (path if path != "/" else "")
        try:
            if h.version == 1:
                with open(os.path.join(d, "cpuacct.usage")) as f:
                    return int(f.read().strip())
            with open(os.path.join(d, "cpu.stat")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        return int(v) * 1000
        except (OSError, ValueError):
            continue
    return None


def average(prev: dict[str, list[float]], cur: dict[str, list[float]]) -> float | None:
    """The average CPU use (1.0 = one CPU) over the containers with a reading in both
    `prev` and `cur` ({name: [t, ns]}); None when none has two."""
    rates = []
    for name, (t1, n1) in cur.items():
        old = prev.get(name)
        if old and t1 > old[0] and n1 >= old[1]:
            rates.append((n1 - old[1]) / ((t1 - old[0]) * 1e9))
    return sum(rates) / len(rates) if rates else None


def readings(root: str, containers: list[str]) -> dict[str, list[float]]:
    """{name: [time, cpu ns]} of the running `containers` of `root`."""
    from cove.engine import state as engine_state
    paths = engine_state.Paths(root)
    out: dict[str, list[float]] = {}
    for name in containers:
        rec: Mapping[str, Any] = engine_state.load_record(paths.cdir(name)) or {}
        pid = int((rec.get("State") or {}).get("Pid") or 0)
        ns = cpu_ns(pid) if pid > 0 else None
        if ns is not None:
            out[name] = [time.time(), float(ns)]
    return out


# -- between passes ----------------------------------------------------------------------

def _dir(root: str, project: str) -> str:
    return os.path.join(root, "projects", project)


@contextlib.contextmanager
def _locked(root: str, project: str) -> Iterator[str]:
    import fcntl
    d = _dir(root, project)
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "autoscale.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d
    finally:
        os.close(fd)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (FileNotFoundError, ValueError):
        return {}


def _write(path: str, data: dict[str, Any]) -> None:
    from cove.engine import state as engine_state
    engine_state.write_atomic(path, json.dumps(data).encode(), 0o644)


def set_spec(root: str, project: str, service: str, spec: dict[str, Any] | None) -> None:
    """Keep (None: drop) a service's normalized spec, in
    `<root>/projects/<project>/autoscale.json`; its samples start over."""
    with _locked(root, project) as d:
        specs = _read(os.path.join(d, "autoscale.json"))
        if spec is None:
            specs.pop(service, None)
        else:
            specs[service] = spec
        _write(os.path.join(d, "autoscale.json"), specs)
        samples = _read(os.path.join(d, "autoscale-samples.json"))
        if samples.pop(service, None) is not None:
            _write(os.path.join(d, "autoscale-samples.json"), samples)


def specs(root: str, project: str) -> dict[str, dict[str, Any]]:
    """The project's autoscaled services and their specs."""
    return _read(os.path.join(_dir(root, project), "autoscale.json"))


def tick(root: str, project: str, service: str, containers: list[str],
         current: int, spec: dict[str, Any] | None = None, now: float | None = None,
         record: Callable[[str, str, str, int, str], object] | None = None,
         ) -> tuple[int, str] | None:
    """One autoscaling pass for a service whose running replicas are `containers`
    (desired count `current`): sample their cgroups, keep the sample, decide; when the
    count changes, record it (`record`, by default the services state's
    set_replicas(root, project, service, n, reason), which emits the event) and return
    (count, reason); else None. The reconciler calls this on its timer; `spec` defaults
    to the one set_spec kept."""
    spec = spec or specs(root, project).get(service)
    if spec is None:
        return None
    cur = readings(root, containers)
    with _locked(root, project) as d:
        path = os.path.join(d, "autoscale-samples.json")
        allsamples = _read(path)
        mine = allsamples.get(service) or {}
        t = time.time() if now is None else now
        avg = average(mine.get("last") or {}, cur)
        keep = max(HISTORY_KEEP, float(spec.get("window", DEFAULT_WINDOW))
                   + float(spec.get("up_window", 0)) + 60)
        hist = [Sample(*s) for s in mine.get("history") or [] if s[0] >= t - keep]
        if avg is not None:
            hist.append(Sample(t, avg, len(containers)))
        n, reason = decide(hist, current, spec, now=t)
        if n != current:
            hist = []  # a new shape: its samples start over (the old ones told of others)
        allsamples[service] = {"last": cur, "history": [list(s) for s in hist]}
        _write(path, allsamples)
    if n == current:
        return None
    if record is not None:
        record(root, project, service, n, f"autoscale: {reason}")
        return n, reason
    try:  # the services core's: it records the count and emits the event with the reason
        from cove.engine.services import state
    except ImportError:
        return n, reason
    setter = getattr(state, "set_replicas", None)
    if setter is not None:
        setter(root, project, service, n, f"autoscale: {reason}")
    return n, reason


def forget(root: str, project: str) -> None:
    """Drop the project's autoscale files (`cove down`)."""
    d = _dir(root, project)
    for f in ("autoscale.json", "autoscale-samples.json", "autoscale.lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, f))


# -- placement ---------------------------------------------------------------------------

RES_CPUS = "cove.reservations.cpus"
RES_MEMORY = "cove.reservations.memory"


def _cpus(v: Any, where: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise CoveError(where, f"{v!r} is not a number of CPUs") from None
    if f < 0 or math.isnan(f):
        raise CoveError(where, f"{v!r} is not a number of CPUs")
    return f


def _bytes(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        from cove.engine.logs import parse_size
        try:
            return parse_size(v.lower().removesuffix("ib").removesuffix("b") or "x")
        except CoveError:
            pass
    raise CoveError(where, f"{v!r} is not a size such as 64m")


def reserved(root: str) -> tuple[float, int]:
    """CPUs and memory that the root's running containers reserve: their labels
    `cove.reservations.cpus` / `.memory` (the services core sets them on replicas), or
    for memory HostConfig.MemoryReservation (`--memory-reservation`)."""
    from cove.engine import state as engine_state
    paths = engine_state.Paths(root)
    cpus, mem = 0.0, 0
    for name in engine_state.all_names(paths):
        rec: Mapping[str, Any] = engine_state.load_record(paths.cdir(name)) or {}
        if (rec.get("State") or {}).get("Status") not in ("running", "restarting",
                                                           "created", "paused"):
            continue
        labels = (rec.get("Config") or {}).get("Labels") or {}
        with contextlib.suppress(CoveError):
            cpus += _cpus(labels.get(RES_CPUS, 0), RES_CPUS)
        m = labels.get(RES_MEMORY)
        if m is None:
            m = (rec.get("HostConfig") or {}).get("MemoryReservation") or 0
        with contextlib.suppress(CoveError):
            mem += _bytes(m, RES_MEMORY)
    return cpus, mem


def capacity() -> tuple[float, int]:
    """What the host has: the CPUs this process may run on and MemTotal."""
    from cove.engine.units import host_memory
    try:
        ncpu = len(os.sched_getaffinity(0))
    except OSError:
        ncpu = os.cpu_count() or 1
    return float(ncpu), host_memory()


def fits(root: str, reservations: dict[str, Any] | None, count: int) -> str | None:
    """None when `count` more replicas, each reserving `reservations` ({"cpus": 0.5,
    "memory": "64m"}: deploy.resources.reservations), fit beside what the root's
    running containers reserve; else the one line that says why not."""
    if not reservations or count <= 0:
        return None
    where = "deploy.resources.reservations"
    c = _cpus(reservations.get("cpus", 0), f"{where}.cpus")
    m = _bytes(reservations.get("memory", 0), f"{where}.memory")
    have_c, have_m = capacity()
    used_c, used_m = reserved(root)
    if c and used_c + c * count > have_c + 1e-9:
        return (f"{where}.cpus: {count} replica(s) x {c:g} CPUs do not fit: the host has "
                f"{have_c:g} CPUs, {used_c:g} already reserved")
    if m and have_m and used_m + m * count > have_m:
        mib = 1 << 20
        return (f"{where}.memory: {count} replica(s) x {m // mib} MiB do not fit: the "
                f"host has {have_m // mib} MiB, {used_m // mib} MiB already reserved")
    return None
