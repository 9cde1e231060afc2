"""Fixtures for the Docker API tests: one `cove serve` per test module, on a socket in
a temp dir, over a state root in a temp dir (the built-in busybox copied in), inside a
network namespace of the module's own (bridges, veths, nft tables and published ports
live and die there), driven by the real clients: /usr/bin/docker (20.10), docker-py,
docker-compose. At the end: every container removed through the API, the server and
the root's engine processes stopped, and nothing left mounted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store
from tests.lib.api import DOCKER, Api
from tests.lib.host import mounts_under, procs_mentioning
from tests.lib.paths import ROOT, RUNTIME

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


@pytest.fixture(scope="session")
def api_busybox(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store(str(tmp_path_factory.mktemp("api-busybox")))
    ensure_busybox(st)
    return st


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
        a.remove_everything()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", root, "supervisor",
                        "stop"], cwd=str(ROOT), env=env, capture_output=True)
        left = procs_mentioning(str(tmp))
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        mounts = mounts_under(root)
        for m in reversed(mounts):
            subprocess.call(["umount", "-l", m])
        subprocess.call(["umount", ns])
    assert not os.path.exists(sock), "the server left its socket"
    assert not left, f"processes left: {left}"
    assert not mounts, f"mounts left: {mounts}"
