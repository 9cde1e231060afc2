"""containerd 1.6 with its CRI plugin, private to the test session, driven as kubelet does
(`CriNode`; the `node` and `kubelet` fixtures of tests/cri/conftest.py make and check it).

containerd runs with root, state, temp dir, sockets and CNI configuration under one temp
dir, inside a network namespace the session makes (`nsenter --net`: only the network
namespace changes, so the host's /sys/fs/cgroup and mount namespace stay the ones
containerd and the runtimes see, while the CNI bridge, the pods' veths, iptables rules
and the streaming server's port live in that namespace). Runtime handlers: `runc` (the
reference), `cove`, `cove-gvisor`, `cove-vm`, each `io.containerd.runc.v2` with its
binary and a runtime root under the temp dir. Images (a busybox and a pause image) are
made here from the host's busybox-static and imported with `ctr -n k8s.io images import`:
nothing is pulled.

After every test the pods it left are removed, then the test checks that nothing is
left: no process (shim, container, cove monitor) but containerd, no mount under the temp
dir, no cgroup under the session's cgroup root, no pod network namespace, no CNI result
or IP allocation. At the end containerd is stopped by its pid, leftover shims are killed
by pid (and reported), the network namespace is deleted.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest

from tests.lib.paths import REPO, cove_runtime
from tests.lib.peers import Peer, containerd_config, docker_archive, finish, sh

try:  # the dev extra's CRI stubs (pyproject.toml); without them tests/cri collects nothing
    from tests.lib.kubelet import Kubelet
    HAVE_CRI_STUBS = True
except ImportError:  # pragma: no cover - an environment made before they were added
    HAVE_CRI_STUBS = False
    Kubelet = Any  # type: ignore[misc,assignment]

BUSYBOX_REF = "localhost/cove/busybox:1"
PAUSE_REF = "localhost/cove/pause:1"
NS = "k8s.io"
NETNS_DIR = "/run/netns"
CNI_CACHE = "/var/lib/cni"
SHIM_SOCKETS = "/run/containerd/s"


def handlers() -> dict[str, str]:
    """Runtime handler name -> the binary containerd's shim runs as its runc.
    `COVE_CRI_BIN_<HANDLER>` (COVE_CRI_BIN_COVE_VM, ...) puts another binary there: a
    wrapper that logs or times the calls, when debugging."""
    bindir = os.path.join(REPO, ".venv", "bin")
    found = {"runc": shutil.which("runc") or "/usr/sbin/runc", "cove": cove_runtime(),
             "cove-gvisor": os.path.join(bindir, "cove-runtime-gvisor"),
             "cove-vm": os.path.join(bindir, "cove-runtime-vm")}
    for name in found:
        found[name] = os.environ.get("COVE_CRI_BIN_" + name.upper().replace("-", "_"),
                                     found[name])
    return found


# ---- images -------------------------------------------------------------------------

def make_images(d: str) -> list[str]:
    """The busybox image and the pause image (busybox's sleep as the sandbox's init:
    as pid 1 of its namespaces it ignores SIGTERM, and containerd stops a sandbox with
    SIGKILL, as it does k8s.gcr.io/pause)."""
    from cove.image.busybox import BUSYBOX, build_rootfs

    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (busybox-static)")
    rootfs = build_rootfs(os.path.join(d, "rootfs"))
    # The files the CRI plugin binds over (as most images have them): a read-only root
    # cannot get a new mount point (and the vm handler's guest mounts it read-only).
    for name in ("resolv.conf", "hosts", "hostname"):
        open(os.path.join(rootfs, "etc", name), "a").close()
    return [
        docker_archive(rootfs, os.path.join(d, "busybox.tar"), BUSYBOX_REF, {"Cmd": ["sh"]},
                       by="cove tests/cri"),
        docker_archive(rootfs, os.path.join(d, "pause.tar"), PAUSE_REF,
                       {"Entrypoint": ["/bin/sleep", "2147483647"]}, by="cove tests/cri"),
    ]


# ---- the network namespace ----------------------------------------------------------

_CLONE_NEWNET = 0x40000000


def netns_socket(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A socket made inside `netns` (a socket belongs to the namespace it was made in:
    setns in a helper thread, which only that thread's namespace changes)."""
    out: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as e:  # handed to the caller
            out.append(e)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def fetch(node: CriNode, host: str, port: int) -> bytes:
    """What a server in a pod sends, from the node's network namespace (retried while
    the server starts)."""
    deadline = time.monotonic() + 10
    while True:
        s = netns_socket(node.netns)
        s.settimeout(5)
        try:
            s.connect((host, port))
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            if data:
                return data
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing from {host}:{port}")
        time.sleep(0.1)


def sweep_stale(max_age: float = 3600.0) -> list[str]:
    """Remove what a killed session left (its cgroup tree, network namespace and image
    dir), when older than `max_age` and with no process in it: a live session never
    runs that long, and its netns and cgroups hold containerd's processes. The names of
    what went, for the log."""
    import glob

    now, gone = time.time(), []

    def old(p: str) -> bool:
        try:
            return now - os.stat(p).st_mtime > max_age
        except OSError:
            return False
    for top in glob.glob("/sys/fs/cgroup/*/covecri-*"):
        walk = sorted(os.walk(top), key=lambda t: -t[0].count("/"))
        busy = any(_read(os.path.join(d, "cgroup.procs")) for d, _, _ in walk)
        if old(top) and not busy:
            for d, _, _ in walk:
                try:
                    os.rmdir(d)
                except OSError:
                    break
            else:
                gone.append(top)
    for ns in glob.glob(f"{NETNS_DIR}/covecri-*"):
        name = os.path.basename(ns)
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                              text=True).stdout.strip()
        if old(ns) and not pids and subprocess.call(["ip", "netns", "del", name]) == 0:
            gone.append(ns)
    for d in glob.glob("/tmp/cri-images-*"):
        if old(d):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


# ---- containerd ---------------------------------------------------------------------

class CriNode(Peer):
    """containerd + CRI in a private netns, with a kubelet-like driver."""

    def __init__(self) -> None:
        self.cgroup_root = f"/covecri-{uuid.uuid4().hex[:8]}"
        super().__init__("cri", [self.cgroup_root], [])
        self.run_containerd_existed = os.path.isdir("/run/containerd")
        self.netns = f"covecri-{uuid.uuid4().hex[:8]}"
        self.cni_net = f"cove-cri-{self.netns[8:]}"  # CNI caches results by network name
        self.sock = self.path("c.sock")
        self.handlers = handlers()
        self.netns_before = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
        self.cni_cache_existed = os.path.isdir(CNI_CACHE)
        self.results_before = set(_listdir(f"{CNI_CACHE}/results"))
        self.shim_socks_before = set(_listdir(SHIM_SOCKETS))
        os.makedirs(self.path("tmp"))
        # runsc's sandbox (cove-gvisor) makes its chroot in containerd's TMPDIR as an
        # unprivileged user: it must reach it (mkdtemp made the dir 0700).
        os.chmod(self.dir, 0o711)
        os.chmod(self.path("tmp"), 0o755)
        os.makedirs(self.path("cni"))
        os.makedirs(self.path("logs"))
        self.write_config()
        self.kubelet: Kubelet | None = None

    def write_config(self, sandbox_image: str = PAUSE_REF) -> None:
        T = self.dir
        runtimes = ""
        for name, binary in self.handlers.items():
            runtimes += f"""
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
        BinaryName = "{binary}"
        Root = "{T}/rt-{name}"
"""
        with open(self.path("config.toml"), "w") as f:
            f.write(containerd_config(T, self.sock, cri=True) + f"""\
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
{runtimes}
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{T}/cni"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{T}/certs.d"
""")
        with open(self.path("cni", "10-cove.conflist"), "w") as f:
            json.dump({"cniVersion": "0.4.0", "name": self.cni_net, "plugins": [
                {"type": "bridge", "bridge": "covecri0", "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": self.path("ipam"),
                          "ranges": [[{"subnet": "10.77.0.0/24"}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}, f)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(["ctr", "-a", self.sock, "-n", NS, *args], check=check, timeout=120)

    def boot(self, images: list[str]) -> None:
        sh(["ip", "netns", "add", self.netns])
        sh(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        self.start(["nsenter", f"--net={NETNS_DIR}/{self.netns}", "containerd", "--config",
                    self.path("config.toml")], ready=lambda: os.path.exists(self.sock))
        for tar in images:
            self.ctr("images", "import", tar)
        self.kubelet = Kubelet(self.sock, self.path("logs"), self.cgroup_root)
        deadline = time.monotonic() + 30
        while True:  # the CRI plugin reports ready once its CNI config is loaded
            conds = {c.type: c.status for c in self.kubelet.status().status.conditions}
            if conds.get("RuntimeReady") and conds.get("NetworkReady"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"CRI not ready: {conds}\n{self.log_tail()}")
            time.sleep(0.1)
        self.mark_baseline()

    # ---- what a test may leave ---------------------------------------------------

    def new_netns(self) -> list[str]:
        now = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
        return sorted(n for n in now - self.netns_before if n != self.netns)

    def cni_results(self) -> list[str]:
        """CNI results cached since the session began: our network's, and the
        loopback network's that containerd adds to every pod."""
        return [n for n in _listdir(f"{CNI_CACHE}/results") if n not in self.results_before
                and (n.startswith(self.cni_net + "-") or n.startswith("cni-loopback-"))]

    def cni_state(self) -> list[str]:
        out = [f"CNI result {n}" for n in self.cni_results()]
        ipam = self.path("ipam", self.cni_net)
        if os.path.isdir(ipam):
            out += [f"IP allocation {n}" for n in os.listdir(ipam)
                    if n not in ("lock",) and not n.startswith("last_reserved_ip")]
        return out

    def check_node_clean(self) -> None:
        self.check_clean()
        deadline = time.monotonic() + 10
        while True:
            bad = [f"netns {n}" for n in self.new_netns()] + self.cni_state()
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not bad, "CRI node left behind:\n" + "\n".join(bad)

    def teardown(self) -> None:
        problems: list[str] = []
        try:
            if self.kubelet is not None:
                problems += self.kubelet.remove_all()
                self.kubelet.close()
        finally:
            try:
                finish(self)
            finally:
                for n in self.new_netns():
                    subprocess.run(["ip", "netns", "del", n], capture_output=True)
                subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
                # What killed shims and failed pods leave: stale shim sockets (no one
                # listening: a live one may be another test's), cached CNI results.
                for n in set(_listdir(SHIM_SOCKETS)) - self.shim_socks_before:
                    _remove_if_stale(os.path.join(SHIM_SOCKETS, n))
                for n in self.cni_results():
                    problems.append(f"CNI result {n}")
                    os.unlink(os.path.join(CNI_CACHE, "results", n))
                # libcni's cache and the shims' socket dir, if this session made them:
                # only when empty (another test may be using them).
                made = [] if self.cni_cache_existed else [f"{CNI_CACHE}/results", CNI_CACHE]
                if not self.run_containerd_existed:
                    made += ["/run/containerd/s", "/run/containerd"]
                for d in made:
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        assert not problems, "CRI teardown: " + "; ".join(problems)


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def _remove_if_stale(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        s.close()
