"""Fixtures for the Docker API tests: one `cove serve` per test module, on a socket in
a temp dir, over a state root in a temp dir (the built-in busybox copied in), inside a
network namespace of the module's own (bridges, veths, nft tables and published ports
live and die there), driven by the real clients: /usr/bin/docker (20.10), docker-py,
docker-compose. At the end: every container removed through the API, the server and
the root's engine processes stopped, and nothing left mounted."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime")
DOCKER = "/usr/bin/docker"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


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


@pytest.fixture(scope="session")
def api_busybox(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store(str(tmp_path_factory.mktemp("api-busybox")))
    ensure_busybox(st)
    return st


def _mounts(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if root in line.split()[4]]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, api_busybox: Store) -> Iterator[Api]:
    if shutil.which("nft") is None or not os.path.exists(DOCKER):
        pytest.skip("needs nft and /usr/bin/docker (scripts/install-deps.sh)")
    tmp = tmp_path_factory.mktemp("api")
    for p in (tmp, *tmp.parents):
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o111)
    root = str(tmp / "root")
    shutil.copytree(api_busybox.root, root, symlinks=True)
    ns = str(tmp / "netns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True)
    sock = str(tmp / "docker.sock")
    home = str(tmp / "home")
    os.makedirs(home)
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen(["nsenter", f"--net={ns}", sys.executable, "-m", "cove.cli.main",
                             "--root", root, "serve", "-H", f"unix://{sock}"],
                            cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None, (tmp / "serve.log").read_text()
        assert time.monotonic() < deadline, "cove serve did not start"
        time.sleep(0.05)
    a = Api(sock, root, ns, home)
    try:
        yield a
    finally:
        # everything through the API, then the server, then the engine's own helpers
        with_cleanup(a)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", root, "supervisor",
                        "stop"], cwd=str(ROOT), env=env, capture_output=True)
        left = _processes(str(tmp))
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        mounts = _mounts(root)
        for m in reversed(mounts):
            subprocess.call(["umount", "-l", m])
        subprocess.call(["umount", ns])
    assert not os.path.exists(sock), "the server left its socket"
    assert not left, f"processes left: {left}"
    assert not mounts, f"mounts left: {mounts}"


def _processes(tmp: str) -> dict[int, str]:
    """Processes whose command line names the module's temp dir (the server, the
    engine's helpers of its root, containers' monitors)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tmp in cmd:
            out[int(pid)] = cmd[:200]
    return out


def with_cleanup(a: Api) -> None:
    ids = a.docker("ps", "-aq", check=False).stdout.split()
    if ids:
        a.docker("rm", "-f", *ids, check=False)
    for n in a.docker("network", "ls", "-q", "--filter", "type=custom",
                      check=False).stdout.split():
        a.docker("network", "rm", n, check=False)
    for v in a.docker("volume", "ls", "-q", check=False).stdout.split():
        a.docker("volume", "rm", v, check=False)
