"""Autoscaling (cove/engine/services/autoscale.py): the decision on traces (pure), the
CPU use of real containers read from their cgroups (a busybox burner and an idle one,
`--network none`), placement against what the host has, and `cove autoscale`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cove.engine.services import autoscale
from cove.engine.services.autoscale import Sample
from cove.errors import CoveError
from tests.lib.engine import Cove

SPEC = autoscale.parse_spec({"min": 1, "max": 5, "cpu": "50%", "window": "30s"})


def test_spec_is_checked_with_its_key_path() -> None:
    assert SPEC == {"min": 1, "max": 5, "cpu": 0.5, "window": 30.0, "up_window": 0.0}
    for raw, where, why in (
            ({"min": 1, "max": 3}, "x-cove-autoscale.cpu", "required"),
            ({"min": 4, "max": 3, "cpu": "50%"}, "x-cove-autoscale.min", "above max"),
            ({"min": 0, "max": 0, "cpu": "50%"}, "x-cove-autoscale.max", "at least 1"),
            ({"min": 1, "max": 3, "cpu": "lots"}, "x-cove-autoscale.cpu", "percentage"),
            ({"min": 1, "max": 3, "cpu": "0%"}, "x-cove-autoscale.cpu", "above 0%"),
            ({"min": -1, "max": 3, "cpu": "5%"}, "x-cove-autoscale.min", "whole number"),
            ({"min": 1, "max": 3, "cpu": "5%", "window": "soon"},
             "x-cove-autoscale.window", "duration"),
            ({"min": 1, "max": 3, "cpu": "5%", "memory": "1g"},
             "x-cove-autoscale.memory", "unknown key"),
            ([1, 3], "x-cove-autoscale", "mapping")):
        with pytest.raises(CoveError) as e:
            autoscale.parse_spec(raw)
        assert e.value.what == where and why in e.value.why, (raw, str(e.value))


def test_scales_up_at_once_within_limits() -> None:
    n, why = autoscale.decide([Sample(0, 1.0, 1)], 1, SPEC)
    assert n == 2 and "above the target 50%" in why and "1 -> 2" in why
    wide = {**SPEC, "max": 50}
    assert autoscale.decide([Sample(0, 4.0, 1)], 1, wide)[0] == 5  # at most +4 or doubling
    assert autoscale.decide([Sample(0, 4.0, 6)], 6, wide)[0] == 12
    assert autoscale.decide([Sample(0, 4.0, 3)], 3, SPEC)[0] == 5  # and never above max
    assert autoscale.decide([Sample(0, 0.54, 2)], 2, SPEC)[0] == 2  # within 10%: noise
    assert autoscale.decide([], 3, SPEC) == (3, "no CPU samples yet")
    assert (autoscale.decide([], 0, SPEC)[0] == 1
            and autoscale.decide([], 9, SPEC)[0] == 5)  # [min, max]
    # an up window takes the smallest recommendation in it: one spike does not count
    spiky = {**SPEC, "up_window": 10.0}
    assert autoscale.decide([Sample(0, 0.5, 2), Sample(5, 1.0, 2)], 2, spiky)[0] == 2
    assert autoscale.decide([Sample(0, 1.0, 2), Sample(5, 1.0, 2)], 2, spiky)[0] == 4


def test_scales_down_only_after_a_quiet_window() -> None:
    idle = [Sample(t, 0.01, 4) for t in range(0, 21, 5)]
    n, why = autoscale.decide(idle, 4, SPEC)
    assert n == 4 and "waiting for 30s" in why
    idle += [Sample(t, 0.01, 4) for t in range(25, 41, 5)]
    n, why = autoscale.decide(idle, 4, SPEC)
    assert n == 1 and "below the target 50%" in why and "4 -> 1" in why
    # one busy sample inside the window holds the count (the largest recommendation)
    mixed = [Sample(t, 0.5 if t == 30 else 0.05, 2) for t in range(0, 61, 5)]
    assert autoscale.decide(mixed, 2, SPEC)[0] == 2
    # partly busy: down to what the busiest sample of the window needed
    part = [Sample(t, 0.3 if t == 30 else 0.05, 4) for t in range(0, 61, 5)]
    assert autoscale.decide(part, 4, SPEC)[0] == 3


def test_a_simulated_load_converges_without_flapping() -> None:
    """Replicas share a load of 1.5 CPUs (each at most one): 1 -> 2 -> 3 and there it
    stays while the load lasts; then idle: back to 1 once, after the window. Samples
    start over after each change, as tick() keeps them."""
    n, hist, changes = 1, [], []
    for t in range(0, 300, 5):
        load = 1.5 if t < 150 else 0.0
        hist.append(Sample(float(t), min(1.0, load / n), n))
        m, _why = autoscale.decide(hist, n, SPEC, now=float(t))
        if m != n:
            changes.append((t, n, m))
            n, hist = m, []
    assert [(a, b) for _t, a, b in changes] == [(1, 2), (2, 3), (3, 1)], changes
    assert changes[1][0] <= 10 and changes[2][0] >= 150 + 30


def _usage(root: str, names: list[str], dt: float = 1.0) -> float | None:
    a = autoscale.readings(root, names)
    time.sleep(dt)
    return autoscale.average(a, autoscale.readings(root, names))


def test_real_cgroups_grow_a_busy_service_and_shrink_an_idle_one(cove: Cove) -> None:
    cove("run", "-d", "--name", "burn", "--network", "none", "busybox", "sh", "-c",
         "while :; do :; done")
    cove("run", "-d", "--name", "idle", "--network", "none", "busybox", "sleep", "300")
    pid = json.loads(cove("inspect", "burn").stdout)[0]["State"]["Pid"]
    assert autoscale.cpu_ns(pid) is not None
    busy, quiet = _usage(cove.root, ["burn"]), _usage(cove.root, ["idle"])
    # (the host's 2 CPUs are shared with other tests: the burner may get far less
    # than a whole one; the idle one gets next to nothing)
    assert busy is not None and busy > 0.08, busy
    assert quiet is not None and quiet < 0.01, quiet
    assert autoscale.cpu_ns(2 ** 22 + 1) is None  # no such process
    # the burner's service: 1 replica, target 4%: it grows at the second pass
    spec = autoscale.parse_spec({"min": 1, "max": 4, "cpu": "4%", "window": "1.5s"})
    got: list[tuple[str, int, str]] = []

    def record(root: str, project: str, service: str, n: int, reason: str) -> None:
        got.append((service, n, reason))
    assert autoscale.tick(cove.root, "proj", "hot", ["burn"], 1, spec, record=record) is None
    time.sleep(1)
    res = autoscale.tick(cove.root, "proj", "hot", ["burn"], 1, spec, record=record)
    assert res is not None and res[0] > 1 and got[0][1] == res[0]
    assert got[0][2].startswith("autoscale: average CPU") and "above the target" in got[0][2]
    # the idle one at 3 replicas: nothing before the window is covered, then down to 1
    for _ in range(6):
        res = autoscale.tick(cove.root, "proj", "cold", ["idle"], 3, spec, record=record)
        if res:
            break
        time.sleep(0.8)
    assert res is not None and res[0] == 1 and "below the target 4%" in res[1], res
    assert got[-1][:2] == ("cold", 1)
    samples = Path(cove.root, "projects", "proj", "autoscale-samples.json")
    assert samples.exists()
    autoscale.forget(cove.root, "proj")
    assert not samples.exists()
    cove("rm", "-f", "burn", "idle")


def test_placement_refuses_what_the_host_cannot_hold(cove: Cove) -> None:
    ncpu = len(os.sched_getaffinity(0))
    assert autoscale.fits(cove.root, None, 3) is None
    assert autoscale.fits(cove.root, {"cpus": 0.01, "memory": "1m"}, 2) is None
    why = autoscale.fits(cove.root, {"cpus": ncpu + 1}, 1)
    assert why is not None and why.startswith("deploy.resources.reservations.cpus: 1 "
                                              "replica(s)") and "\n" not in why
    why = autoscale.fits(cove.root, {"memory": "100000g"}, 1)
    assert why is not None and "reservations.memory" in why and "MiB" in why
    # what running containers reserve counts
    cove("run", "-d", "--name", "big", "--network", "none", "--label",
         f"cove.reservations.cpus={ncpu - 0.5}", "busybox", "sleep", "300")
    assert autoscale.reserved(cove.root)[0] == ncpu - 0.5
    why = autoscale.fits(cove.root, {"cpus": 0.5}, 2)
    assert why is not None and f"{ncpu - 0.5:g} already reserved" in why
    assert autoscale.fits(cove.root, {"cpus": 0.5}, 1) is None
    with pytest.raises(CoveError, match=r"reservations\.cpus"):
        autoscale.fits(cove.root, {"cpus": "many"}, 1)
    cove("rm", "-f", "big")


def test_cli(cove: Cove) -> None:
    r = cove("autoscale", "-p", "proj", "web", "--min", "1", "--max", "3", "--cpu", "50%",
             check=False)
    assert r.returncode == 1 and r.stderr == ("cove: autoscale web: no project proj "
                                              "(cove up it first, or say -p)\n")
    # (a desired state as `cove up` leaves it, reduced to what autoscale looks at)
    Path(cove.root, "projects", "proj").mkdir(parents=True)
    Path(cove.root, "projects", "proj", "desired.json").write_text(
        json.dumps({"services": {"web": {"replicas": 1}}}))
    r = cove("autoscale", "-p", "proj", "api", "--min", "1", "--max", "3", "--cpu", "5%",
             check=False)
    assert r.stderr == "cove: autoscale api: no such service in project proj\n"
    cove("autoscale", "-p", "proj", "web", "--min", "1", "--max", "3", "--cpu", "50%",
         "--window", "10s")
    spec = json.loads(cove("autoscale", "-p", "proj", "web").stdout)
    assert spec == {"min": 1, "max": 3, "cpu": 0.5, "window": 10.0, "up_window": 0.0}
    for args, line in (
            (["--min", "1", "--max", "3", "--cpu", "lots"],
             "cove: autoscale web: --cpu: 'lots' is not a percentage such as 70%\n"),
            (["--min", "5", "--max", "3", "--cpu", "5%"],
             "cove: autoscale web: --min: 5 is above max (3)\n"),
            (["--max", "3"], "cove: autoscale web: --min and --cpu required\n")):
        r = cove("autoscale", "-p", "proj", "web", *args, check=False)
        assert r.returncode == 1 and r.stderr == line, r.stderr
    assert json.loads(cove("autoscale", "-p", "proj", "web").stdout) == spec  # unchanged
    cove("autoscale", "-p", "proj", "web", "--off")
    r = cove("autoscale", "-p", "proj", "web", check=False)
    assert r.stderr == "cove: autoscale web: the service is not autoscaled\n"
