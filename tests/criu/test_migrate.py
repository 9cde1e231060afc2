"""`cove migrate` / `cove migrate-receive` between two "hosts".

The hosts are two state roots, each run in its own network namespace (A, B), joined
by a veth pair (their management link, where the receiver listens). Both have a Cove
network `mig` with the same subnet, and a second veth pair joins the two networks'
bridges into one L2 segment, on which a client (namespace C, plugged into B's bridge)
talks to the container: a TCP echo server that moves from A to B with its address,
MAC and established connection. The client streams numbered lines through it during
the migration: every echo comes back, in order, none lost or doubled.

Bad input runs anywhere (no CRIU needed): a wrong token, no receiver; a receiver that
vanishes mid-transfer needs CRIU (the VM), as does the migration itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.engine import migrate_wire
from cove.image.store import Store
from tests.lib.criu import criu_broken
from tests.lib.engine import Cove
from tests.lib.paths import ROOT
from tests.lib.wait import wait_for

needs_criu = pytest.mark.skipif(bool(criu_broken()), reason=criu_broken() or "ok")
COUNTER = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"


class Receiver:
    """`cove migrate-receive` in the background; its address once it listens."""

    def __init__(self, c: Cove, token: str, listen: str = "127.0.0.1:0") -> None:
        env = {**os.environ, "COVE_RUNTIME": str(ROOT / ".venv" / "bin" / "cove-runtime")}
        self.p = subprocess.Popen(
            [*c.prefix, sys.executable, "-m", "cove.cli.main", "--root", c.root,
             "migrate-receive", "--listen", listen, "--token", token],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=str(ROOT))
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line.startswith("listening on "), line + (self.p.stderr.read()
                                                         if self.p.stderr else "")
        self.addr = line.split()[-1]

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate()


def _numbers(c: Cove, name: str) -> list[int]:
    try:
        text = Path(c.root, "containers", name, f"{name}-json.log").read_text()
    except FileNotFoundError:
        return []
    return [int(json.loads(x)["log"]) for x in text.splitlines() if x.strip()]


def test_migrate_bad_input(cove: Cove, tmp_path: Path, busybox_blobs: Store) -> None:
    """A wrong token, a name taken on the target, no receiver, a bad port, a container
    that does not run: one line each, the source running and unchanged, nothing made
    on the target."""
    cove("run", "-d", "--network", "none", "--name", "src", "busybox", "sh", "-c", COUNTER)
    other = str(tmp_path / "root2")
    shutil.copytree(busybox_blobs.root, other, symlinks=True)
    c2 = Cove(other)
    rx = Receiver(c2, "right")
    try:
        r = cove("migrate", "src", "--to", rx.addr, "--token", "wrong", check=False)
        assert r.returncode == 1 and r.stderr == f"cove: target {rx.addr}: bad token\n", \
            r.stderr
        assert rx.p.poll() is None  # a wrong token does not end the receiver
        c2("create", "--network", "none", "--name", "src", "busybox", "true")
        r = cove("migrate", "src", "--to", rx.addr, "--token", "right", check=False)
        assert r.returncode == 1 and r.stderr == (
            f"cove: target {rx.addr}: container name 'src': already in use on the "
            "target\n"), r.stderr
        c2("rm", "src")
    finally:
        rx.stop()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    r = cove("migrate", "src", "--to", f"127.0.0.1:{port}", "--token", "t", check=False)
    assert r.returncode == 1 and "cannot connect" in r.stderr and \
        r.stderr.count("\n") == 1, r.stderr
    r = cove("migrate", "src", "--to", "127.0.0.1:99999", "--token", "t", check=False)
    assert r.returncode == 1 and "not a port number" in r.stderr, r.stderr
    cove("create", "--network", "none", "--name", "idle", "busybox", "true")
    r = cove("migrate", "idle", "--to", "127.0.0.1:1", "--token", "t", check=False)
    assert r.returncode == 1 and "only a running container" in r.stderr, r.stderr
    st = cove("inspect", "-f", "{{.State.Status}}", "src").stdout.strip()
    assert st == "running"
    assert not Path(cove.root, "containers", "src", "migrate.pre").exists()
    assert not list(Path(other, "containers").glob("*"))
    assert not [n for n in os.listdir(other) if n.startswith(".migrate-")]
    c2("supervisor", "stop", check=False)


def _vanishing_receiver(after: str) -> tuple[str, threading.Thread]:
    """A receiver that takes the hello and then goes away: after the first pre-dump
    round (`after="pre"`) or after the final archive, without answering ("final")."""
    srv = socket.create_server(("127.0.0.1", 0))
    addr = f"127.0.0.1:{srv.getsockname()[1]}"

    def serve() -> None:
        sock, _ = srv.accept()
        srv.close()
        c = migrate_wire.Conn(sock, "source")
        c.recv()
        c.send_json(b"O", {})
        while True:
            kind, data = c.recv()
            if kind == b"E":
                meta = json.loads(data)
                if meta["kind"] == after:
                    break
                c.send_json(b"O", {})
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return addr, t


@needs_criu
def test_migrate_target_vanishes(cove: Cove) -> None:
    """The target goes away during the pre-copy, then after the final dump: the source
    runs on (the second time restored here from its own checkpoint), counting on."""
    cove("run", "-d", "--network", "none", "--name", "src", "busybox", "sh", "-c", COUNTER)
    wait_for(lambda: len(_numbers(cove, "src")) >= 2, 60, "the counter")
    for after in ("pre", "final"):
        addr, t = _vanishing_receiver(after)
        r = cove("migrate", "src", "--to", addr, "--token", "t", "--threshold", "0",
                 check=False, timeout=300)
        t.join(10)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "connection closed" in r.stderr or "connection lost" in r.stderr, r.stderr
        if after == "final":
            assert "(it runs here again)" in r.stderr, r.stderr
        assert cove("inspect", "-f", "{{.State.Status}}", "src").stdout.strip() == "running"
        n = len(_numbers(cove, "src"))
        wait_for(lambda n=n: len(_numbers(cove, "src")) >= n + 2, 60, "counting on")
        nums = _numbers(cove, "src")
        assert nums == list(range(len(nums))), nums  # nothing lost or repeated
        assert not Path(cove.root, "containers", "src", "migrate.pre").exists()
    cove("rm", "-f", "src")


# -- the two-host migration of a TCP echo server -------------------------------------------

CLIENT = r"""
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 7000), timeout=120)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
stop, i, buf, got, last, gap = sys.argv[2], 0, b"", 0, time.monotonic(), 0.0
print("connected", flush=True)
while True:
    if not os.path.exists(stop):
        s.sendall(b"%d\n" % i)
        i += 1
    elif got == i:
        break
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            print("EOF after", got, flush=True); sys.exit(1)
        buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        now = time.monotonic()
        gap, last = max(gap, now - last), now
        if int(line) != got:
            print("expected", got, "got", int(line), flush=True); sys.exit(1)
        got += 1
    time.sleep(0.02)
print("done", got, "%.3f" % gap, flush=True)
"""


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", *(["-n", ns] if ns else []), *args], check=True,
                   capture_output=True)


@pytest.fixture
def hosts(tmp_path: Path, busybox_blobs: Store) -> Iterator[tuple[Cove, Cove, str]]:
    """Two hosts (roots in namespaces A and B, a management link 10.99.0.1-2) and a
    client namespace; their `mig` networks (10.77.0.0/24) on one L2 segment."""
    tag = f"{os.getpid() % 10000}"
    ns = {k: f"cvmig{k}{tag}" for k in "abc"}
    made: list[str] = []
    roots = []
    try:
        for k in "abc":
            _ip("", "netns", "add", ns[k])
            made.append(ns[k])
            _ip(ns[k], "link", "set", "lo", "up")
        _ip(ns["a"], "link", "add", "m0", "type", "veth", "peer", "name", "m0",
            "netns", ns["b"])
        for k, a in (("a", "10.99.0.1/24"), ("b", "10.99.0.2/24")):
            _ip(ns[k], "addr", "add", a, "dev", "m0")
            _ip(ns[k], "link", "set", "m0", "up")
        for k in "ab":
            root = str(tmp_path / f"host-{k}")
            shutil.copytree(busybox_blobs.root, root, symlinks=True)
            c = Cove(root, ["nsenter", f"--net=/run/netns/{ns[k]}"])  # /sys kept
            roots.append(c)
            c("network", "create", "--subnet", "10.77.0.0/24", "mig")
        br = [json.loads(Path(c.root, "networks", "mig.json").read_text())["Bridge"]
              for c in roots]
        _ip(ns["a"], "link", "add", "l2", "type", "veth", "peer", "name", "l2",
            "netns", ns["b"])
        for k, b in zip("ab", br, strict=True):
            _ip(ns[k], "link", "set", "l2", "master", b, "up")
        _ip(ns["b"], "link", "add", "cl", "type", "veth", "peer", "name", "eth0",
            "netns", ns["c"])
        _ip(ns["b"], "link", "set", "cl", "master", br[1], "up")
        _ip(ns["c"], "addr", "add", "10.77.0.250/24", "dev", "eth0")
        _ip(ns["c"], "link", "set", "eth0", "up")
        yield roots[0], roots[1], ns["c"]
    finally:
        for c in roots:
            for n in ("echo",):
                c("rm", "-f", n, check=False)
            c("network", "rm", "mig", check=False)
            c("supervisor", "stop", check=False)
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@needs_criu
@pytest.mark.slow
def test_migrate_tcp_echo(hosts: tuple[Cove, Cove, str], tmp_path: Path) -> None:
    a, b, client_ns = hosts
    a("run", "-d", "--network", "mig", "--name", "echo", "busybox",
      "nc", "-ll", "-p", "7000", "-e", "cat")
    ip = a("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "echo").stdout.strip()
    assert ip == "10.77.0.2", ip
    stop = tmp_path / "stop"
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen(["nsenter", f"--net=/run/netns/{client_ns}", sys.executable,
                               str(script), ip, str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        deadline = time.monotonic() + 60
        line = client.stdout.readline()
        assert line.strip() == "connected", (line, time.monotonic() < deadline)
        time.sleep(2)
        rx = Receiver(b, "s3cret", listen="10.99.0.2:0")
        r = a("migrate", "echo", "--to", rx.addr, "--token", "s3cret", "--tcp-established",
              "--json", check=False, timeout=400)
        code, out, err = rx.finish()
        assert r.returncode == 0, r.stderr + err
        assert code == 0, err
        nums = json.loads(r.stdout)
        print(f"\nmigrate (TCG): {nums}\nreceiver: {out.strip()}")
        assert b("inspect", "-f", "{{.State.Status}} {{.NetworkSettings.IPAddress}}",
                 "echo").stdout.split() == ["running", ip]
        assert a("inspect", "echo", check=False).returncode != 0  # the source is gone
        time.sleep(2)  # echoes through the moved server
        stop.touch()
        cout, cerr = client.communicate(timeout=120)
        assert client.returncode == 0, cout + cerr
        done = cout.split()
        assert done[0] == "done" and int(done[1]) > 0, cout
        print(f"client: {done[1]} lines echoed in order, longest gap {done[2]}s "
              f"(downtime as the client saw it)")
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
