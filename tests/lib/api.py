"""The Docker API tests' view of one `cove serve`: its socket, root and network
namespace, the real docker client (/usr/bin/docker, 20.10) and docker-py over it, and
raw HTTP for the bad-input cases the clients never send. The `api` fixture that starts
it is tests/api/conftest.py's."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from typing import Any

from tests.lib.terminal import PtySession

DOCKER = "/usr/bin/docker"


class UnixHTTP(http.client.HTTPConnection):
    """http.client over the server's unix socket (raw requests for the bad-input
    cases the clients never send)."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Api:
    def __init__(self, sock: str, root: str, netns: str, home: str) -> None:
        self.sock, self.root, self.netns, self.home = sock, root, netns, home
        self.host = f"unix://{sock}"
        self.env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": home,
                    "HOME": home}

    def docker(self, *args: str, check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout, input=input)
        if check:
            assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}"
        return r

    def terminal(self, *args: str) -> PtySession:
        """`docker <args>` on a fresh pty of 30 rows and 100 columns."""
        return PtySession([DOCKER, *args], env=self.env, size=(30, 100))

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        c = UnixHTTP(self.sock)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            try:
                doc = json.loads(data) if data else None
            except ValueError:
                doc = data
            return r.status, {k.lower(): v for k, v in r.getheaders()}, doc
        finally:
            c.close()

    def client(self) -> Any:
        import docker
        return docker.DockerClient(base_url=self.host, timeout=60)

    def in_ns(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.netns}", *cmd], capture_output=True,
                              text=True, timeout=timeout)

    def remove_everything(self) -> None:
        """Every container, custom network and volume, through the API (what the end
        of a module does before it stops the server)."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        for n in self.docker("network", "ls", "-q", "--filter", "type=custom",
                             check=False).stdout.split():
            self.docker("network", "rm", n, check=False)
        for v in self.docker("volume", "ls", "-q", check=False).stdout.split():
            self.docker("volume", "rm", v, check=False)
