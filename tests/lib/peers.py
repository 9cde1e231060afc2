"""What the tests that drive peers share (tests/peers: podman, containerd's ctr, dockerd;
tests/cri: containerd's CRI plugin; tests/handlers and tests/image use some): a daemon
under a temp dir with its cleanup checks (`Peer`), images as docker-archive tars,
containerd's config. The fixtures are in tests/peers/conftest.py and
tests/cri/conftest.py; host inspection is tests/lib/host.py's, the pty
tests/lib/terminal.py's.

Each daemon runs with its own root, state and socket under a temp dir (prefix "peer"),
is stopped by PID at the end of its module, and everything it leaves on the host
(mounts, processes, cgroups, /etc/docker/key.json, /opt/containerd, ...) is removed
and then checked for. Each test also checks, after it ran, that it left no mount, no
process and no container cgroup behind (`Peer.check_clean`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.lib.host import (
    HostPaths,
    cgroup_dirs,
    is_zombie,
    kill_pids,
    mounts_mentioning,
    procs_mentioning,
    rm_cgroups,
    wait_pid_gone,
)
from tests.lib.paths import cove_runtime

IMAGE_REF = "docker.io/library/peerbusybox:latest"
DOCKER_IMAGE = "peerbusybox:latest"  # the same image as docker names it
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def need(binary: str) -> str:
    """The binary's path, or skip the module's tests."""
    if binary.startswith("/"):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed")
        return binary
    found = shutil.which(binary)
    if found is None:
        pytest.skip(f"{binary} is not installed")
    return found


def sh(argv: list[str], timeout: float = 60, check: bool = True, env: dict[str, str] | None = None,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {p.returncode}\nstdout: {p.stdout}\n"
                             f"stderr: {p.stderr}")
    return p


# ---- images -------------------------------------------------------------------------

def docker_archive(rootfs: str, dest: str, ref: str = IMAGE_REF,
                   config: dict[str, Any] | None = None, by: str = "cove tests/peers") -> str:
    """A docker-archive tar (what `docker save` writes) of one layer holding `rootfs`,
    with `config` as the image's runtime config (default: Cmd sh; Env has PATH):
    `ctr images import`, `docker load` and `podman load` all read it."""
    lbuf = io.BytesIO()
    with tarfile.open(fileobj=lbuf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name)
    layer = lbuf.getvalue()
    lsha = hashlib.sha256(layer).hexdigest()
    created = "2024-01-01T00:00:00Z"
    cfg = json.dumps({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": [PATH_ENV], **({"Cmd": ["sh"]} if config is None else config)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{lsha}"]},
        "history": [{"created": created, "created_by": by}],
    }).encode()
    csha = hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps([{"Config": f"{csha}.json", "RepoTags": [ref],
                            "Layers": [f"{lsha}/layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as t:
        for name, data in ((f"{lsha}/layer.tar", layer), (f"{csha}.json", cfg),
                           ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1704067200
            t.addfile(ti, io.BytesIO(data))
    return dest


# ---- containerd ---------------------------------------------------------------------

def containerd_config(d: str, sock: str, cri: bool) -> str:
    """The head of a config.toml for a containerd private to a test: root, state, temp
    dir and sockets under `d`, the snapshotters that can't work here off, and the CRI
    plugin off unless `cri` (tests/cri adds its section after this)."""
    off = [*([] if cri else ["io.containerd.grpc.v1.cri"]),
           *(f"io.containerd.snapshotter.v1.{s}" for s in ("btrfs", "zfs", "devmapper",
                                                          "aufs"))]
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
temp = "{d}/tmp"
disabled_plugins = {json.dumps(off)}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
"""


# ---- a daemon under test ------------------------------------------------------------

class Peer:
    """One daemon (or, for podman, no daemon) under a temp dir, with cleanup checks."""

    def __init__(self, name: str, cgroup_parents: list[str], host_paths: list[str]) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"peer-{name}-", dir="/tmp")
        self.runtime = cove_runtime()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.dir, f"{name}.log")
        self.cgroup_parents = cgroup_parents
        # cgroup parents that existed before us are not ours to remove.
        self.cgroups_existed = {c for c in cgroup_parents if cgroup_dirs(c)}
        self.host = HostPaths(host_paths)
        self.allowed_pids: set[int] = set()
        self.baseline_mounts: set[str] = set()
        # Where cove-runtime keeps container state for this peer (--root).
        self.cove_roots = ["/run/cove-runtime", self.dir]

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def start(self, argv: list[str], ready: Callable[[], object],
              env: dict[str, str] | None = None,
              timeout: float = 30) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=env, cwd=self.dir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{argv[0]} exited with {self.proc.returncode}:\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} did not become ready:\n" + self.log_tail())
            time.sleep(0.1)
        self.mark_baseline()

    def mark_baseline(self) -> None:
        """What the running daemon itself legitimately holds: its processes, mounts."""
        self.allowed_pids = set(procs_mentioning(self.dir))
        self.baseline_mounts = set(mounts_mentioning(self.dir))

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def container_cgroups(self) -> list[str]:
        """Cgroups below our parents other than the parents' own helper groups."""
        out = []
        for parent in self.cgroup_parents:
            for d in cgroup_dirs(parent):
                rel = d.split("/", 5)[-1]  # path below /sys/fs/cgroup/<hier>/
                if rel.strip("/") in (parent.strip("/"), f"{parent.strip('/')}/conmon"):
                    continue
                out.append(d)
        return out

    def check_clean(self, ids: Sequence[str] = ()) -> None:
        """After a test: no new mounts, no processes but the daemon's, no container
        cgroups, no cove state for `ids` (waits briefly: teardown is asynchronous)."""
        def leftovers() -> list[str]:
            bad = []
            bad += [f"mount {m}" for m in mounts_mentioning(self.dir)
                    if m not in self.baseline_mounts]
            bad += [f"process {pid}: {cmd}" for pid, cmd in procs_mentioning(self.dir).items()
                    if pid not in self.allowed_pids and not is_zombie(pid)]
            bad += [f"cgroup {c}" for c in self.container_cgroups()]
            bad += [f"cove state {p}" for p in self.cove_state_dirs(ids)]
            return bad

        deadline = time.monotonic() + 15
        while True:
            bad = leftovers()
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not bad, f"{self.name} left behind:\n" + "\n".join(bad)

    def cove_state_dirs(self, ids: Sequence[str]) -> list[str]:
        """State dirs cove-runtime still holds for `ids` under any of our state roots."""
        out = []
        for r in self.cove_roots:
            for dirpath, _dirs, files in os.walk(r):
                if os.path.basename(dirpath) in ids and "state.json" in files:
                    out.append(dirpath)
        return out

    def stop(self, term_timeout: float = 20) -> list[str]:
        """Stop the daemon by PID, remove whatever is left; return what was left."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(term_timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"{self.name} ignored SIGTERM for {term_timeout}s")
                self.proc.kill()
                self.proc.wait(10)
        # Children of the daemon (its containerd, shims, conmon) are by now gone or
        # orphaned; what mentions our dir was started by us. Kill by PID.
        left = procs_mentioning(self.dir)
        live = [p for p in left if not is_zombie(p)]
        if live:
            problems += [f"process {p}: {left[p]}" for p in live]
            kill_pids(live)
            for p in live:
                wait_pid_gone(p, 5)
        for m in mounts_mentioning(self.dir):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for c in self.cgroup_parents:
            if c in self.cgroups_existed:
                continue
            stuck = rm_cgroups(c)
            problems += [f"cgroup {s} could not be removed" for s in stuck]
        self.host.cleanup()
        return problems

    def remove_dir(self) -> None:
        left = mounts_mentioning(self.dir)
        if left:
            raise AssertionError(f"mounts remain under {self.dir}: {left}")
        shutil.rmtree(self.dir, ignore_errors=True)


def finish(peer: Peer) -> None:
    """Module teardown: stop, clean, and fail if the daemon left anything behind."""
    problems = peer.stop()
    still = mounts_mentioning(peer.dir) + [c for c in peer.cgroup_parents
                                      if c not in peer.cgroups_existed and cgroup_dirs(c)]
    peer.remove_dir()
    assert not problems and not still, (f"{peer.name} teardown found:\n"
                                        + "\n".join(problems + still))
