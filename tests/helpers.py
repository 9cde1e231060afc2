"""Shared test helpers: bundles from a base config dict (as crun's tests do), a runtime
driver with its own state root, and a leftover check that every integration test runs.
"""

from __future__ import annotations

import array
import copy
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cove.image.busybox import build_rootfs
from cove.oci.defaults import default_spec

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime")
_TEMPLATE_ROOTFS: Path | None = None


def template_rootfs(base: Path) -> Path:
    """One busybox rootfs per session; bundles get a copy (cheap: one binary + links)."""
    global _TEMPLATE_ROOTFS
    if _TEMPLATE_ROOTFS is None or not _TEMPLATE_ROOTFS.exists():
        _TEMPLATE_ROOTFS = Path(build_rootfs(str(base / "busybox-rootfs")))
    return _TEMPLATE_ROOTFS


def base_config(args: list[str] | None = None) -> dict[str, Any]:
    """runc's default spec, non-interactive, running `args`."""
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args or ["true"]
    spec["root"]["readonly"] = False
    return spec


def new_id(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Bundle:
    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))


def make_bundle(tmp: Path, config: dict[str, Any] | None = None, name: str = "bundle") -> Bundle:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template_rootfs(tmp.parent), path / "rootfs", symlinks=True)
    b = Bundle(path, copy.deepcopy(config) if config else base_config())
    b.write()
    return b


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


def cgroup_dirs(name: str) -> list[str]:
    """Directories under any cgroup hierarchy whose name contains `name`."""
    found = []
    for base in Path("/sys/fs/cgroup").iterdir():
        if not base.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                if name in d:
                    found.append(os.path.join(dirpath, d))
            if dirpath.count("/") > 7:
                dirnames[:] = []
    return found


def leftovers(tmp: Path, ids: list[str]) -> list[str]:
    """What a test left behind: mounts under its temp dir, processes rooted there,
    cgroups named after its containers, state entries."""
    out = []
    t = str(tmp)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if t in fields[4] or t in fields[3]:
                out.append(f"mount {fields[4]}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if root.startswith(t) or cwd.startswith(t):
            out.append(f"process {pid} (root {root})")
    for cid in ids:
        out += [f"cgroup {d}" for d in cgroup_dirs(cid)]
    state = tmp / "state"
    if state.is_dir():
        # seccomp-cache holds compiled filters shared by all containers, not state.
        out += [f"state entry {n}" for n in os.listdir(state) if n != "seccomp-cache"]
    return out


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
    """Read a pty master until `marker` shows up or the other side closes."""
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
