"""Driving an OCI runtime binary (cove-runtime, runc, crun) with a private state root;
one runtime test's world (`Env`, the `env` fixture's); the receiving end of a
--console-socket."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.lib.bundles import Bundle, make_bundle, new_id
from tests.lib.paths import RUNTIME


class Runtime:
    """Runs an OCI runtime binary (cove-runtime, runc) with a private state root."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def __call__(self, *args: str, input: str | None = None, timeout: float = 30,
                 check: bool = False, cwd: str | None = None,
                 pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a created container's init inherits our stdio, and a pipe
        # would keep subprocess waiting for EOF until the container exits.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run([self.binary, "--root", str(self.root), *args], input=input,
                               stdout=out, stderr=err, text=True, timeout=timeout, cwd=cwd,
                               pass_fds=pass_fds)
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(r.args, r.returncode, out.read(), err.read())
        if check and p.returncode != 0:
            raise AssertionError(f"{args} failed ({p.returncode}): {p.stderr}")
        return p

    def state(self, cid: str) -> dict[str, Any]:
        p = self("state", cid, check=True)
        state: dict[str, Any] = json.loads(p.stdout)
        return state

    def status(self, cid: str) -> str:
        return str(self.state(cid)["status"])

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (self("state", cid).stdout or '"status": "none"').find(f'"{status}"') < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{cid} never reached {status}")
            time.sleep(0.02)


class Env:
    """One test's world: a temp dir, a cove-runtime with its own root, the ids it made."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rt = Runtime(RUNTIME, tmp / "state")
        self.ids: list[str] = []

    def id(self, prefix: str = "t") -> str:
        cid = new_id(prefix)
        self.ids.append(cid)
        return cid

    def bundle(self, config: dict[str, Any] | None = None, name: str = "bundle") -> Bundle:
        return make_bundle(self.tmp, config, name)

    def cleanup(self) -> None:
        """Force-delete what a failing test may have left, with cove-runtime itself."""
        for cid in self.ids:
            self.rt("delete", "--force", cid)


def console_server(path: Path, got: dict[str, Any]) -> threading.Thread:
    """Listen on `path` as a --console-socket; the thread stores the pty master the
    runtime sends (SCM_RIGHTS) in got["fd"] and the name sent with it in got["name"]."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        fds = array.array("i")
        msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        got["name"] = msg.decode()
        got["fd"] = fds[0]
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def read_until(fd: int, marker: bytes) -> bytes:
    """Read a pty master until `marker` shows up or the other side closes (no deadline:
    for a process that ends by itself)."""
    data = b""
    while marker not in data:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every slave fd is closed
            break
        if not chunk:
            break
        data += chunk
    return data
