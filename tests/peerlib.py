"""What the tests that drive peers share (tests/peers: podman, containerd's ctr, dockerd;
tests/cri: containerd's CRI plugin; tests/handlers and tests/image use some): a daemon
under a temp dir with its cleanup checks (`Peer`), host inspection (mounts, processes,
cgroups), images as docker-archive tars, a real pty. The fixtures are in
tests/peers/conftest.py and tests/cri/conftest.py.

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
import pty
import select
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CGROUP_ROOT = "/sys/fs/cgroup"
IMAGE_REF = "docker.io/library/peerbusybox:latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
T = TypeVar("T")


def cove_runtime() -> str:
    """The cove-runtime launcher (regenerated if missing)."""
    path = os.path.join(REPO, ".venv", "bin", "cove-runtime")
    if not os.path.exists(path):
        subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), "-m",
                        "cove.cli.launcher", os.path.join(REPO, ".venv", "bin")],
                       cwd=REPO, check=True, timeout=60)
    return path


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


# ---- host inspection ----------------------------------------------------------------

def mounts_under(path: str) -> list[str]:
    """Mount points (from mountinfo) whose line mentions `path`, deepest first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if path in line:
                out.append(line.split()[4].replace("\\040", " "))
    return sorted(out, key=len, reverse=True)


def procs_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every process whose command line contains `text`."""
    found = {}
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in cmd:
            found[int(name)] = cmd
    return found


def cgroup_dirs(rel: str) -> list[str]:
    """Every cgroup directory at or below /sys/fs/cgroup/*/<rel>, deepest first."""
    out = []
    for hier in sorted(os.listdir(CGROUP_ROOT)):
        top = os.path.join(CGROUP_ROOT, hier, rel.strip("/"))
        if not os.path.isdir(top) or os.path.islink(os.path.join(CGROUP_ROOT, hier)):
            continue
        for dirpath, _dirs, _files in os.walk(top):
            out.append(dirpath)
    return sorted(set(out), key=len, reverse=True)


def rm_cgroups(rel: str) -> list[str]:
    """rmdir every cgroup under <rel> in every hierarchy; return those that stayed."""
    stuck = []
    for d in cgroup_dirs(rel):
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # a process that just exited may still be charged
        else:
            stuck.append(d)
    return stuck


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is our child (reaps it) or not (polls /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return True
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}"):
                return True
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        return True
            except OSError:
                return True
        time.sleep(0.05)
    return False


def wait_for(pred: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class HostPaths:
    """Host paths a daemon may create outside its temp dir: remember which existed,
    remove the ones that did not at the end."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.existed = {p for p in paths if os.path.lexists(p)}

    def cleanup(self) -> list[str]:
        removed = []
        for p in self.paths:
            if p in self.existed or not os.path.lexists(p):
                continue
            for m in mounts_under(p):
                subprocess.run(["umount", "-l", m], capture_output=True)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except OSError:
                    pass
            removed.append(p)
        return removed


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
        self.baseline_mounts = set(mounts_under(self.dir))

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
            bad += [f"mount {m}" for m in mounts_under(self.dir)
                    if m not in self.baseline_mounts]
            bad += [f"process {pid}: {cmd}" for pid, cmd in procs_mentioning(self.dir).items()
                    if pid not in self.allowed_pids and not _is_zombie(pid)]
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
        live = [p for p in left if not _is_zombie(p)]
        if live:
            problems += [f"process {p}: {left[p]}" for p in live]
            kill_pids(live)
            for p in live:
                wait_pid_gone(p, 5)
        for m in mounts_under(self.dir):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for c in self.cgroup_parents:
            if c in self.cgroups_existed:
                continue
            stuck = rm_cgroups(c)
            problems += [f"cgroup {s} could not be removed" for s in stuck]
        self.host.cleanup()
        return problems

    def remove_dir(self) -> None:
        left = mounts_under(self.dir)
        if left:
            raise AssertionError(f"mounts remain under {self.dir}: {left}")
        shutil.rmtree(self.dir, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def finish(peer: Peer) -> None:
    """Module teardown: stop, clean, and fail if the daemon left anything behind."""
    problems = peer.stop()
    still = mounts_under(peer.dir) + [c for c in peer.cgroup_parents
                                      if c not in peer.cgroups_existed and cgroup_dirs(c)]
    peer.remove_dir()
    assert not problems and not still, (f"{peer.name} teardown found:\n"
                                        + "\n".join(problems + still))


# ---- a real pty ---------------------------------------------------------------------

class PtySession:
    """A command on a fresh pty (as a terminal user would run it)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - child
            try:
                if env is not None:
                    os.execvpe(argv[0], argv, env)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        self.buf = b""

    def read_until(self, token: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while token not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {token!r} on the pty; got {self.buf!r}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"pty closed before {token!r}; got {self.buf!r}")
                self.buf += chunk
        return self.buf

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            got, status = os.waitpid(self.pid, os.WNOHANG)
            if got == self.pid:
                break
            # Keep draining so the child never blocks on a full pty.
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    self.buf += os.read(self.fd, 4096)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"pty command did not exit; got {self.buf!r}")
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)
