#!/usr/bin/env python3
"""Services benchmark: `cove up -d` of the 3-service project (web x3 busybox httpd with
a health check, a client that depends on web being healthy, a worker with a named
volume: 5 containers) against `docker-compose up -d` (compose 1.29) on a private
dockerd 20.10 (runc), interleaved, each followed by an untimed `down -v`; then the time
from a web replica's SIGKILL to a healthy replacement in the load balancer's backends.

Everything runs in a network namespace this script makes (the bridges, veths and nft
tables of both engines go with it), with private state roots; the same busybox rootfs
(Debian's busybox-static) for both. Docker can't publish one host port from three
replicas, so its web publishes an ephemeral port per replica; Cove's publishes 18080
through its load balancer. podman-compose is not installed here, and `podman kube
play` can't run three port-80 servers in one pod, so podman is not compared.

    bench/services/run.py [-n 5] [--engines cove,docker] [--replace 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(HERE))

from tests.lib.daemons import Docker  # noqa: E402
from tests.lib.peers import DOCKER_IMAGE, docker_archive, finish  # noqa: E402

COMPOSE = """\
services:
  web:
    image: ${IMG}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html &&
              exec httpd -f -p 80 -h /www"]
    init: true
    ports: ["${WEB_PORT}"]
    healthcheck:
      test: "wget -qO- http://127.0.0.1/ >/dev/null"
      interval: 0.3s
      timeout: 2s
      retries: 2
    stop_grace_period: 2s
    deploy:
      replicas: 3
  client:
    image: ${IMG}
    init: true
    command: ["sh", "-c", "while :; do wget -qO- http://web/ >/dev/null 2>&1; sleep 0.5; done"]
    depends_on:
      web: {condition: service_healthy}
  worker:
    image: ${IMG}
    init: true
    command: ["sh", "-c", "date >> /data/starts; exec sleep 100000"]
    volumes: ["data:/data"]
    depends_on: [web]
volumes:
  data: {}
"""


def timed(argv: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {r.stderr.strip()}")
    return took


class Cove:
    name = "cove"

    def __init__(self, tmp: str, ns: str) -> None:
        self.root = os.path.join(tmp, "cove-root")
        self.ns = ns
        self.cmd = ["nsenter", f"--net={ns}", str(HERE / ".venv/bin/cove"), "--root",
                    self.root]
        self.env = {**os.environ, "COVE_RUNTIME": str(HERE / ".venv/bin/cove-runtime"),
                    "IMG": "busybox", "WEB_PORT": "18080:80"}
        self.dir = os.path.join(tmp, "cove-app")
        os.makedirs(self.dir)
        Path(self.dir, "compose.yaml").write_text(COMPOSE)
        subprocess.run([*self.cmd, "images"], check=True, stdout=subprocess.DEVNULL)

    def up(self) -> float:
        return timed([*self.cmd, "up", "-d"], self.env, self.dir)

    def down(self) -> None:
        timed([*self.cmd, "down", "-v"], self.env, self.dir)

    def replace(self) -> float:
        """SIGKILL web-2; seconds until a new web-2 is healthy and in the lb's backends."""
        from cove.engine import state as engine_state
        from cove.engine.services import state as desired_state
        paths = engine_state.Paths(self.root)
        rec = engine_state.load(paths.cdir("cove-app-web-2")) or {}
        old = rec["State"]["StartedAt"]
        t0 = time.perf_counter()
        os.kill(rec["State"]["Pid"], signal.SIGKILL)
        while time.perf_counter() - t0 < 30:
            r = engine_state.load(paths.cdir("cove-app-web-2")) or {}
            h = (r.get("State") or {}).get("Health") or {}
            ip = (r.get("NetworkSettings") or {}).get("IPAddress")
            if r and r["State"]["StartedAt"] != old and h.get("Status") == "healthy" and ip:
                d = desired_state.load(self.root, "cove-app") or {}
                if ip in (d["services"]["web"].get("applied") or []):
                    return time.perf_counter() - t0
            time.sleep(0.01)
        d = desired_state.load(self.root, "cove-app") or {}
        log = Path(self.root, "zygote.log")
        raise SystemExit("cove: no healthy replacement within 30 s: "
                         f"{json.dumps(r.get('State'))} applied="
                         f"{d['services']['web'].get('applied')}\n"
                         + (log.read_text()[-2000:] if log.exists() else ""))

    def close(self) -> None:
        subprocess.run([*self.cmd, "supervisor", "stop"], env=self.env,
                       stdout=subprocess.DEVNULL)


class DockerCompose:
    name = "docker"

    def __init__(self, tmp: str, ns: str, tar: str) -> None:
        self.d = Docker()
        self.d.start(["nsenter", f"--net={ns}", "dockerd", "--config-file",
                      self.d.path("daemon.json")], ready=self.d.ready,
                     env={**os.environ, "TMPDIR": self.d.path("tmp")}, timeout=60)
        self.d("load", "-i", tar)
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.d.sock}",
                    "IMG": DOCKER_IMAGE, "WEB_PORT": "80"}
        self.dir = os.path.join(tmp, "docker-app")
        os.makedirs(self.dir)
        Path(self.dir, "compose.yaml").write_text(COMPOSE)
        self.cmd = ["docker-compose", "-f", "compose.yaml"]

    def up(self) -> float:
        return timed([*self.cmd, "up", "-d"], self.env, self.dir)

    def down(self) -> None:
        timed([*self.cmd, "down", "-v", "-t", "2"], self.env, self.dir)

    def close(self) -> None:
        finish(self.d)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=5, help="timed `up -d` per engine")
    p.add_argument("--replace", type=int, default=10, help="timed replacements (cove)")
    p.add_argument("--engines", default="cove,docker")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    tmp = tempfile.mkdtemp(prefix="bench-services-")
    os.chmod(tmp, 0o755)
    ns = os.path.join(tmp, "netns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True)
    engines: list[Cove | DockerCompose] = []
    try:
        for w in a.engines.split(","):
            if w == "cove":
                engines.append(Cove(tmp, ns))
            elif w == "docker":
                if not (shutil.which("dockerd") and shutil.which("docker-compose")):
                    print("skipping docker: dockerd or docker-compose missing",
                          file=sys.stderr)
                    continue
                from cove.image.busybox import build_rootfs
                rootfs = os.path.join(tmp, "rootfs")
                build_rootfs(rootfs)
                tar = docker_archive(rootfs, os.path.join(tmp, "busybox.tar"),
                                     ref=DOCKER_IMAGE)
                engines.append(DockerCompose(tmp, ns, tar))
        times: dict[str, list[float]] = {e.name: [] for e in engines}
        for e in engines:  # a warm-up each: images unpacked, daemons' caches
            e.up()
            e.down()
        for _ in range(a.n):
            for e in engines:
                times[e.name].append(e.up())
                e.down()
        repl: list[float] = []
        cove = next((e for e in engines if isinstance(e, Cove)), None)
        if cove is not None and a.replace:
            cove.up()
            time.sleep(2.5)
            for _ in range(a.replace):
                repl.append(cove.replace())
                time.sleep(2.5)  # (a replica that ran < 2 s waits 2 s: crash back-off)
            cove.down()
        res = {k: {"median_s": statistics.median(v), "runs": v} for k, v in times.items()}
        if repl:
            res["cove_replace"] = {"median_s": statistics.median(repl), "runs": repl}
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            for k, v in res.items():
                print(f"{k:14} median {v['median_s']:.3f} s  "
                      f"({', '.join(f'{x:.2f}' for x in v['runs'])})")
            if "cove" in res and "docker" in res:
                ratio = res["cove"]["median_s"] / res["docker"]["median_s"]
                print(f"cove / docker-compose: x{ratio:.2f}")
    finally:
        for e in engines:
            e.close()
        subprocess.run(["umount", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
