"""`update`: change a running container's resources, from JSON or runc's flags."""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.oci import jsonio
from cove.runtime import state as runtime_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}

# flag -> (section, key, kind)
FLAGS: dict[str, tuple[str, str, str]] = {
    "blkio-weight": ("blockIO", "weight", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu-share": ("cpu", "shares", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "kernel-memory": ("memory", "kernel", "bytes"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "bytes"),
    "memory": ("memory", "limit", "bytes"),
    "memory-reservation": ("memory", "reservation", "bytes"),
    "memory-swap": ("memory", "swap", "bytes"),
    "pids-limit": ("pids", "limit", "int"),
}


def parse_bytes(s: str) -> int:
    """"512m", "1G", "-1" -> bytes (docker's RAMInBytes)."""
    t = s.strip().lower()
    if t == "-1":
        return -1
    num = t.rstrip("bkmgti")
    unit = t[len(num):]
    if unit.endswith("i"):
        unit = unit[:-1]
    if unit not in _UNITS or not num.replace(".", "", 1).isdigit():
        raise CoveError(f"value {s!r}", "expected a size like 512m or 1g")
    return int(float(num) * _UNITS[unit])


def resources_from(resources_file: str, flags: dict[str, str]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if resources_file:
        try:
            if resources_file == "-":
                chunks = []
                while True:
                    c = os.read(0, 65536)
                    if not c:
                        break
                    chunks.append(c)
                raw = b"".join(chunks)
            else:
                with open(resources_file, "rb") as f:
                    raw = f.read()
            res = jsonio.loads(raw)
        except OSError as e:
            raise CoveError(f"--resources {resources_file}", os_why(e)) from None
        except jsonio.JSONError as e:
            raise CoveError(f"--resources {resources_file}", f"invalid JSON: {e}") from None
        if not isinstance(res, dict):
            raise CoveError("--resources", "expected a JSON object")
    for flag, value in flags.items():
        section, key, kind = FLAGS[flag]
        if kind == "str":
            v: Any = value
        elif kind == "bytes":
            v = parse_bytes(value)
        else:
            try:
                v = int(value)
            except ValueError:
                raise CoveError(f"--{flag} {value}", "expected integer") from None
        res.setdefault(section, {})[key] = v
    return res


def update(root: str, cid: str, resources: dict[str, Any]) -> None:
    st = runtime_state.load(root, cid)
    if st.status() == "stopped":
        raise CoveError(f"container {cid!r}", "container not running")
    if not st.data.get("cgroup"):
        raise CoveError(f"container {cid!r}", "has no cgroup")
    from cove.runtime.cgroups import open_manager_from_state

    open_manager_from_state(st.data["cgroup"]).update(resources)
