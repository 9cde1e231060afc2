"""`cove cdi generate --nvidia`: a CDI spec for the NVIDIA GPUs of this host, made from
what the driver installed (as NVIDIA's `nvidia-ctk cdi generate` does), so that `cove run
--device nvidia.com/gpu=all IMAGE nvidia-smi` works without NVIDIA's container toolkit:

- device nodes: one device per GPU (`nvidia.com/gpu=0`, from /dev/nvidiaN) and `all`;
  the control nodes every GPU needs (/dev/nvidiactl, /dev/nvidia-uvm,
  /dev/nvidia-uvm-tools, /dev/nvidia-modeset, /dev/nvidia-caps/*) in the spec's own
  edits;
- the driver's user-space libraries, found through the linker cache (`ldconfig -p`,
  `ldconfig -r ROOT -p` for another driver root): every NVIDIA library the cache names
  (libcuda, libnvidia-*, libnvcuvid, ...), bound read-only at the same paths;
- its binaries (nvidia-smi, nvidia-debugdump, nvidia-persistenced, the MPS pair) and
  the GSP firmware of the running driver version (/lib/firmware/nvidia/VERSION);
- LD_LIBRARY_PATH naming the library directories: where nvidia-ctk adds a hook that
  runs ldconfig in the container, cove sets the variable (no helper binary needed).

`driver_root` lets the tests point the generator at a fake driver tree (the CI hosts
have no GPU): host paths in the spec are under it, container paths are as on a real
host.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import subprocess
from typing import Any

from cove.errors import CoveError

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                 "/dev/nvidia-modeset")
LIBRARIES = ("libcuda.so*", "libcudadebugger.so*", "libnvidia-*.so*", "libnvcuvid.so*",
             "libnvoptix.so*", "libGLX_nvidia.so*", "libEGL_nvidia.so*",
             "libGLESv1_CM_nvidia.so*", "libGLESv2_nvidia.so*", "libvdpau_nvidia.so*")
BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
            "nvidia-cuda-mps-control", "nvidia-cuda-mps-server")
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin")
_VERSION = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)")


def _under(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))


def driver_version(root: str = "/") -> str:
    """The loaded driver's version: /sys/module/nvidia/version, else the kernel
    module's banner in /proc/driver/nvidia/version."""
    try:
        with open(_under(root, "/sys/module/nvidia/version")) as f:
            v = f.read().strip()
            if v:
                return v
    except OSError:
        pass
    try:
        with open(_under(root, "/proc/driver/nvidia/version")) as f:
            m = _VERSION.search(f.read())
    except OSError:
        m = None
    if m is None:
        raise CoveError("cdi generate --nvidia", "no NVIDIA driver is loaded here "
                        "(no /sys/module/nvidia/version or /proc/driver/nvidia/version)")
    return m.group(1)


def ld_cache(root: str = "/") -> dict[str, str]:
    """The linker cache's names → paths (the host's paths: under `root` for another
    root), read through ldconfig, first entry of each name (the cache's preference)."""
    args = ["ldconfig", "-p"] if root == "/" else ["ldconfig", "-r", root, "-p"]
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.access(exe, os.X_OK):
            args[0] = exe
            break
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise CoveError("cdi generate --nvidia", f"ldconfig -p: {e}") from None
    out: dict[str, str] = {}
    for line in r.stdout.splitlines()[1:]:
        name, arrow, path = line.strip().partition(" => ")
        if not arrow:
            continue
        name = name.split(" (", 1)[0]
        out.setdefault(name, _under(root, path.strip()))
    return out


def _node(host: str, ctr: str) -> dict[str, Any] | None:
    try:
        st = os.stat(host)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    out: dict[str, Any] = {"path": ctr}
    if host != ctr:
        out["hostPath"] = host
    return out


def _mount(host: str, ctr: str) -> dict[str, Any]:
    return {"hostPath": host, "containerPath": ctr,
            "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"]}


def generate(root: str = "/") -> dict[str, Any]:
    """The spec (a dict, ready for JSON or YAML) for the GPUs under `root`."""
    version = driver_version(root)
    devdir = _under(root, "/dev")
    try:
        gpus = sorted(int(n[6:]) for n in os.listdir(devdir)
                      if re.fullmatch(r"nvidia\d+", n))
    except OSError:
        gpus = []
    if not gpus:
        raise CoveError("cdi generate --nvidia", f"driver {version} is loaded but there is "
                                                 f"no /dev/nvidiaN device node")
    devices: list[dict[str, Any]] = []
    all_nodes = []
    for i in gpus:
        n = _node(_under(root, f"/dev/nvidia{i}"), f"/dev/nvidia{i}")
        if n is not None:
            devices.append({"name": str(i), "containerEdits": {"deviceNodes": [n]}})
            all_nodes.append(n)
    devices.append({"name": "all", "containerEdits": {"deviceNodes": all_nodes}})
    control = [n for p in CONTROL_NODES if (n := _node(_under(root, p), p))]
    caps = _under(root, "/dev/nvidia-caps")
    if os.path.isdir(caps):
        for c in sorted(os.listdir(caps)):
            n = _node(os.path.join(caps, c), f"/dev/nvidia-caps/{c}")
            if n is not None:
                control.append(n)
    mounts, libdirs = [], []
    seen: set[str] = set()
    for name, path in sorted(ld_cache(root).items()):
        if not any(fnmatch.fnmatch(name, p) for p in LIBRARIES) or not os.path.exists(path):
            continue
        ctr = path if root == "/" else "/" + os.path.relpath(path, root)
        # the file the cache's name (libcuda.so.1, a link) leads to, bound under both
        # names: a bind mount can't make a symlink
        real = os.path.realpath(path)
        for c in (os.path.join(os.path.dirname(ctr), os.path.basename(real)), ctr):
            if c not in seen:
                seen.add(c)
                mounts.append(_mount(real, c))
        if os.path.dirname(ctr) not in libdirs:
            libdirs.append(os.path.dirname(ctr))
    for b in BINARIES:
        for d in BIN_DIRS:
            p = _under(root, f"{d}/{b}")
            if os.access(p, os.X_OK) and os.path.isfile(p):
                mounts.append(_mount(os.path.realpath(p), f"{d}/{b}"))
                break
    fw = f"/lib/firmware/nvidia/{version}"
    if os.path.isdir(_under(root, fw)):
        mounts.append(_mount(_under(root, fw), fw))
    edits: dict[str, Any] = {"deviceNodes": control, "mounts": mounts}
    if libdirs:
        edits["env"] = ["LD_LIBRARY_PATH=" + ":".join(libdirs),
                        f"NVIDIA_DRIVER_VERSION={version}"]
    # 0.5.0: device names that start with a digit, and hostPath in device nodes
    return {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": devices,
            "containerEdits": edits}
