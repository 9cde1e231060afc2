"""What the services tests share: compose projects run by `cove` inside a network
namespace the test makes (tests/conftest.py's `netns` and `cove` fixtures), the web
images v1/v2/v3 built with `cove build`, and a client that loops requests to a
published port and counts the failures."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.lib.engine import Cove

# web: serves "<hostname> <version>"; a /broken file in the image (v3) keeps httpd from
# starting, so its health check never passes. tini as pid 1 (init: true) passes the
# stop signal on to httpd, which as pid 1 would ignore SIGTERM.
WEB_CMD = ("mkdir -p /www && echo \"$$(hostname) $$(cat /version)\" > /www/index.html; "
           "[ -e /broken ] && exec sleep 1000; exec httpd -f -p 80 -h /www")

COMPOSE = """\
services:
  web:
    image: web:v1
    command: ["sh", "-c", '{web_cmd}']
    init: true
    ports: ["${{WEB_PORT:-18080}}:80"]
    healthcheck:
      test: "wget -qO- http://127.0.0.1/ >/dev/null"
      interval: 0.3s
      timeout: 2s
      retries: 2
    stop_grace_period: 2s
    deploy:
      replicas: 3
      update_config: {{parallelism: 1, order: start-first, failure_action: rollback,
                      monitor: 1s}}
  client:
    image: busybox
    init: true
    command: ["sh", "-c", "while :; do wget -qO- http://web/ >> /tmp/seen 2>&1 ||
              echo FAIL >> /tmp/seen; sleep 0.2; done"]
    depends_on:
      web: {{condition: service_healthy}}
  worker:
    image: busybox
    init: true
    command: ["sh", "-c", "date >> /data/starts; exec sleep 100000"]
    volumes: ["data:/data"]
    depends_on: [web]
volumes:
  data: {{}}
"""


def write_project(d: Path, text: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    f = d / "compose.yaml"
    f.write_text(text if text is not None else COMPOSE.format(web_cmd=WEB_CMD))
    return f


def build_web(c: Cove, tmp: Path, versions: tuple[str, ...] = ("v1", "v2", "v3")) -> None:
    """web:vN from busybox: /version says vN; v3 also has /broken."""
    for v in versions:
        ctx = tmp / f"web-{v}"
        ctx.mkdir(exist_ok=True)
        (ctx / "version").write_text(v + "\n")
        lines = ["FROM busybox", "COPY version /version"]
        if v == "v3":
            (ctx / "broken").write_text("")
            lines.append("COPY broken /broken")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        c("build", "-q", "-t", f"web:{v}", str(ctx), timeout=120)


def ps(c: Cove, project: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        c("compose", "ps", "-p", project, "--format", "json").stdout)
    return rows


def get(inns: list[str], port: int, timeout: float = 2.0) -> str:
    """One request to 127.0.0.1:port from the test's namespace: the answer, or ""."""
    code = ("import sys, urllib.request\n"
            "try: print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())\n"
            "except OSError: pass")
    try:
        return subprocess.run([*inns, "python3", "-c", code, f"http://127.0.0.1:{port}/"],
                              capture_output=True, text=True,
                              timeout=timeout + 1).stdout.strip()
    except subprocess.TimeoutExpired:
        return ""


class Loop:
    """A client looping requests to the published port (from the test's namespace, in
    one process: a Python loop over sockets), counting answers and failures."""

    def __init__(self, netns: str, port: int) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", "python3", "-c", _LOOP, str(port)],
            stdout=subprocess.PIPE, text=True)
        self.answers: list[str] = []
        self.failures: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, body = line.rstrip("\n").partition(" ")
            (self.answers if kind == "ok" else self.failures).append(body)

    def mark(self) -> tuple[int, int]:
        return len(self.answers), len(self.failures)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.t.join(5)


_LOOP = r"""
import socket, sys, time
port = int(sys.argv[1])
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            raise OSError("answer: " + head[:40].decode(errors="replace"))
        print("ok", body.decode(errors="replace").strip(), flush=True)
    except OSError as e:
        print("fail", e, flush=True)
    time.sleep(0.02)
"""
