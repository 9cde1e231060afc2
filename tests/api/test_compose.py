"""docker-compose 1.29 (Debian's) against `cove serve`: a 3-service file (a busybox
httpd web with a published port and a health check, a client that wgets `web` by name
in a loop, a worker with a named volume; one user network; depends_on; restart:
always): up -d, ps, logs, --scale web=3, restart, down -v leaves nothing."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.api import Api

COMPOSE = """\
version: "2.4"
services:
  web:
    image: busybox
    command: sh -c 'echo hello-web > /tmp/index.html && exec httpd -f -p 80 -h /tmp'
    ports: ["80"]
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 3
    restart: always
    stop_grace_period: 1s
    networks: [appnet]
  client:
    image: busybox
    command: sh -c 'while true; do wget -qO- http://web/; sleep 0.5; done'
    depends_on: [web]
    restart: always
    stop_grace_period: 1s
    networks: [appnet]
  worker:
    image: busybox
    command: sh -c 'date >> /data/log; exec sleep 1000'
    volumes: ["wdata:/data"]
    stop_grace_period: 1s
    networks: [appnet]
networks:
  appnet: {}
volumes:
  wdata: {}
"""


def _compose(api: Api, proj: Path, *args: str, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker-compose", "-p", "capi", *args], cwd=str(proj),
                       capture_output=True, text=True, env=api.env, timeout=timeout)
    assert r.returncode == 0, f"docker-compose {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (scripts/install-deps.sh)")
def test_compose_up_scale_restart_down(api: Api, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "docker-compose.yml").write_text(COMPOSE)
    _compose(api, proj, "up", "-d")
    try:
        ps = _compose(api, proj, "ps").stdout
        assert "capi_web_1" in ps and "capi_client_1" in ps and "capi_worker_1" in ps
        logs = ""
        for _ in range(40):   # the client reaches web by its service name
            logs = _compose(api, proj, "logs", "client").stdout
            if "hello-web" in logs:
                break
            time.sleep(0.25)
        assert "hello-web" in logs
        _compose(api, proj, "up", "-d", "--scale", "web=3")
        names = api.docker("ps", "--filter", "label=com.docker.compose.service=web",
                           "--format", "{{.Names}}").stdout.split()
        assert sorted(names) == ["capi_web_1", "capi_web_2", "capi_web_3"]
        _compose(api, proj, "restart", "worker", "client")
        log = api.docker("exec", "capi_worker_1", "cat", "/data/log").stdout
        assert len(log.splitlines()) == 2   # the volume kept the first run's line
    finally:
        _compose(api, proj, "down", "-v")
    assert api.docker("ps", "-aq").stdout == ""
    assert "capi" not in api.docker("network", "ls").stdout
    assert "capi" not in api.docker("volume", "ls").stdout
