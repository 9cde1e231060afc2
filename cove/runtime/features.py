"""`features`: what this build of cove-runtime implements (OCI features document)."""

from __future__ import annotations

import os

from cove.oci import OCI_VERSION
from cove.oci.spec import HOOK_KINDS, NAMESPACES
from cove.runtime.rootfs import _FLAGS, _PROPAGATION
from cove.sys.caps import CAPS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def libseccomp_version() -> str | None:
    import ctypes

    class _Ver(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                    ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Ver)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def features() -> dict[str, Any]:
    from cove.runtime import seccomp

    sv = libseccomp_version()
    out: dict[str, Any] = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(set(_FLAGS) | set(_PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": sorted(CAPS, key=CAPS.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": sv is not None,
                "actions": sorted(seccomp._ACTIONS),
                "operators": sorted(seccomp._OPS),
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "knownFlags": sorted(seccomp._FLAG_ATTRS),
                "supportedFlags": sorted(seccomp._FLAG_ATTRS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        # checkpoint/restore through CRIU (cove/runtime/checkpoint.py): "true" where its
        # binary is installed, as runc says it of a build with CRIU support (whether
        # this kernel suits CRIU is `checkpoint`'s own one-line answer)
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "true" if any(
            os.access(p, os.X_OK) for p in ("/usr/sbin/criu", "/sbin/criu",
                                             "/usr/local/sbin/criu")) else "false"},
    }
    if sv:
        out["annotations"]["io.github.seccomp.libseccomp.version"] = sv
    return out
