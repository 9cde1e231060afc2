"""Load: 200 detached containers started, listed, stopped and removed on a small
machine, with nothing left behind (mounts, cgroups, veths, nft rules, processes,
state). Prints the time per container and the memory the engine's processes (the root's
one monitor and its keeper) keep per container."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.lib.engine import Cove

N = 200


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


def _mem_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                out[k] = int(v.split()[0])
    return out


@pytest.mark.slow
def test_two_hundred_containers(cove: Cove) -> None:
    links, rules = _links(), _ruleset()
    names = [f"load{i:03d}" for i in range(N)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda n: cove("run", "-d", "--name", n, "--network", "none",
                                   "busybox", "sleep", "1000", timeout=300), names))
    started = time.monotonic() - t0
    ps = json.loads(cove("ps", "--format", "json").stdout)
    assert sorted(p["Names"][0] for p in ps) == names
    assert all(p["State"] == "running" for p in ps)
    assert len(cove("ps").stdout.splitlines()) == N + 1
    recs = json.loads(cove("inspect", *names).stdout)
    monitors = {r["MonitorPid"] for r in recs}
    assert len(monitors) == 1, "one monitor watches them all"
    mon = _mem_kib(monitors.pop())
    zpid = int(open(os.path.join(cove.root, "zygote.pid")).read())
    zyg = _mem_kib(zpid)
    t1 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda chunk: cove("stop", "-t", "1", *chunk, timeout=300),
                    [names[i::4] for i in range(4)]))
    stopped = time.monotonic() - t1
    assert cove("ps", "-q").stdout == ""
    t2 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda chunk: cove("rm", *chunk, timeout=300),
                    [names[i::4] for i in range(4)]))
    removed = time.monotonic() - t2
    print(f"\n{N} containers: run -d {started:.1f}s ({started / N * 1000:.0f} ms each, "
          f"4 at a time), stop {stopped:.1f}s, rm {removed:.1f}s")
    print(f"per container: monitor PSS {mon['Pss'] / 1024 / N:.3f} MiB "
          f"(its RSS {mon['Rss'] / 1024:.1f} MiB in all), keeper PSS "
          f"{zyg['Pss'] / 1024 / N:.3f} MiB (RSS {zyg['Rss'] / 1024:.1f} in all)")
    # nothing left: records, runtime state, cgroups, links, rules (processes and mounts:
    # the fixture checks)
    assert cove("ps", "-a", "-q").stdout == ""
    assert os.listdir(os.path.join(cove.root, "containers")) == []
    left = [d for n in names for d in glob.glob(f"/sys/fs/cgroup/*/cove/{n}")]
    assert not left, f"cgroups left: {left[:5]}"
    assert _links() == links and _ruleset() == rules
