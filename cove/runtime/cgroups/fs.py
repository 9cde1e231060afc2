"""Small cgroupfs file helpers and config.json value checks shared by v1 and v2."""

from __future__ import annotations

import errno
import os
import sys
import time

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_UINT64 = (1 << 64) - 1


def warn(msg: str) -> None:
    """A warning line on stderr, in the CLI's format (runc warns the same way)."""
    sys.stderr.write(f"cove-runtime: warning: {msg}\n")


def read(dirpath: str, name: str) -> str:
    """The stripped content of a cgroup file."""
    with open(os.path.join(dirpath, name)) as f:
        return f.read().strip()


def read_or(dirpath: str, name: str, default: str = "") -> str:
    try:
        return read(dirpath, name)
    except OSError:
        return default


def read_uint(dirpath: str, name: str) -> int:
    """A number file; "max" reads as MAX_UINT64, a missing file as 0."""
    try:
        v = read(dirpath, name)
    except OSError:
        return 0
    if v == "max":
        return MAX_UINT64
    try:
        n = int(v)
    except ValueError:
        return 0
    # v1 files print "unlimited" as a huge page-rounded value, or -1 (rare).
    return MAX_UINT64 if n < 0 else n


def read_kv(dirpath: str, name: str) -> dict[str, int]:
    """A flat keyed file ("key value" lines) such as memory.stat or cpu.stat."""
    out: dict[str, int] = {}
    for line in read_or(dirpath, name).splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def write(dirpath: str, name: str, value: str, knob: str) -> None:
    """Write one value to a cgroup file; failures name the config knob."""
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise CoveError(knob, f"{name} is not available in {dirpath}") from e
    except OSError as e:
        raise CoveError(knob, f"open {path}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CoveError(knob, f"write {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def has(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))


def procs(dirpath: str) -> list[int]:
    """PIDs in cgroup.procs of dirpath and all its descendants."""
    out: list[int] = []
    for top, _dirs, _files in os.walk(dirpath):
        try:
            with open(os.path.join(top, "cgroup.procs")) as f:
                out.extend(int(x) for x in f.read().split())
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV):
                raise
    return out


# config.json value checks: each failure names the JSON path.


def get_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    """obj[key] as an integer, None when absent or null."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise CoveError(f"{where}.{key}", "expected integer")
    return v


def get_uint(obj: dict[str, Any], key: str, where: str) -> int | None:
    v = get_int(obj, key, where)
    if v is not None and v < 0:
        raise CoveError(f"{where}.{key}", "expected a non-negative integer")
    return v


def get_bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise CoveError(f"{where}.{key}", "expected boolean")
    return v


def get_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise CoveError(f"{where}.{key}", "expected string")
    return v


def get_dict(obj: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise CoveError(f"{where}.{key}", "expected object")
    return v


def get_list(obj: dict[str, Any], key: str, where: str) -> list[dict[str, Any]] | None:
    """obj[key] as a list of objects."""
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise CoveError(f"{where}.{key}", "expected array")
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise CoveError(f"{where}.{key}[{i}]", "expected object")
    return v


def device_key(item: dict[str, Any], where: str) -> str:
    """"major:minor" of a blockIO device entry."""
    major = get_int(item, "major", where)
    minor = get_int(item, "minor", where)
    if major is None or minor is None:
        raise CoveError(where, "major and minor are required")
    return f"{major}:{minor}"


def rmtree(top: str, deadline: float) -> str | None:
    """rmdir a cgroup and its children, deepest first; EBUSY retried until deadline."""
    if not os.path.isdir(top):
        return None
    dirs = [p for p, _d, _f in os.walk(top)]
    for d in reversed(dirs):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                return f"rmdir {d}: {e.strerror}"
    return None

