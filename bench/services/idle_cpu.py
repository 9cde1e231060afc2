#!/usr/bin/env python3
"""What an idle project costs the engine: the root's monitor's CPU time (its own, and
its reaped children's: the reconcile passes it forks) over SECONDS while one project
(2 busybox `sleep` replicas, no health check, nothing to do) is up. Read from
/proc/<monitor>/stat (utime+stime, cutime+cstime). In a network namespace and a state
root this script makes; `--tree DIR` runs another checkout of cove (say `git archive
HEAD` unpacked) to compare.

    bench/services/idle_cpu.py [--seconds 30] [--tree DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent.parent
COMPOSE = """\
services:
  app:
    image: busybox
    init: true
    command: ["sleep", "100000"]
    deploy: {replicas: 2}
"""


def cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of `pid`."""
    f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12])) / hz, (int(f[13]) + int(f[14])) / hz


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--tree", help="the cove checkout to run (default: this one)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    tree = os.path.abspath(a.tree or HERE)
    tmp = tempfile.mkdtemp(prefix="bench-idle-")
    os.chmod(tmp, 0o755)
    ns = os.path.join(tmp, "netns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True)
    root = os.path.join(tmp, "root")
    env = {**os.environ, "PYTHONPATH": tree,
           "COVE_RUNTIME": str(HERE / ".venv/bin/cove-runtime")}
    cove = ["nsenter", f"--net={ns}", sys.executable, "-m", "cove.cli.main", "--root",
            root]
    proj = os.path.join(tmp, "idle")
    os.makedirs(proj)
    Path(proj, "compose.yaml").write_text(COMPOSE)
    try:
        subprocess.run([*cove, "up", "-d"], cwd=proj, env=env, check=True,
                       stderr=subprocess.DEVNULL)
        time.sleep(3)  # (the passes that follow `up`)
        pid = int(Path(root, "monitor.pid").read_text())
        own0, kids0 = cpu(pid)
        t0 = time.monotonic()
        time.sleep(a.seconds)
        own1, kids1 = cpu(pid)
        dt = time.monotonic() - t0
        out = {"tree": tree, "seconds": round(dt, 1), "monitor_cpu_s": round(own1 - own0, 3),
               "children_cpu_s": round(kids1 - kids0, 3),
               "percent_of_a_cpu": round(100 * (own1 - own0 + kids1 - kids0) / dt, 2)}
        print(json.dumps(out) if a.json else
              f"{tree}: over {dt:.0f}s the monitor used {own1 - own0:.2f}s of CPU, its "
              f"children {kids1 - kids0:.2f}s: {out['percent_of_a_cpu']}% of a CPU")
    finally:
        subprocess.run([*cove, "down", "-v"], cwd=proj, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([*cove, "supervisor", "stop"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.call(["umount", ns])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
