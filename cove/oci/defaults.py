"""The default config.json: runc's `spec` defaults plus Docker's seccomp profile.

OCI data, not runtime code: `cove-runtime spec` writes it, the image layer starts a
bundle's config from it, and tests build their configs on it.
"""

from __future__ import annotations

from cove.oci import OCI_VERSION
from cove.oci.seccomp_default import default_profile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec(rootless: bool = False, uid: int = 0, gid: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS)
                             for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "cove",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                 "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            # Docker's default profile (runc's `spec` has none): mount, unshare, keyctl,
            # module loading... fail with EPERM unless a capability allows them.
            "seccomp": default_profile(DEFAULT_CAPS),
        },
    }
    if rootless:
        lin = spec["linux"]
        lin.pop("resources")
        lin["namespaces"] = [n for n in lin["namespaces"]
                             if n["type"] not in ("network", "cgroup")]
        lin["namespaces"].append({"type": "user"})
        lin["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        lin["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        mounts = []
        for m in spec["mounts"]:
            if m["type"] == "cgroup":
                continue
            if m["type"] == "sysfs":
                # A rootless container does not own a network namespace: bind /sys.
                m = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
            mounts.append(m)
        spec["mounts"] = mounts
    return spec
