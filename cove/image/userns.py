"""Rootless id mapping: the caller's subordinate ids and work done inside a user
namespace that maps them (podman's `unshare`).

A rootless container maps its root to the caller and its ids 1..N to the ranges
/etc/subuid and /etc/subgid grant the caller, written by the setuid helpers
newuidmap/newgidmap (package `uidmap`); without a range (or the helpers) only the
caller's own id is mapped. With ranges, a layer's file of uid 1000 must be owned on
the host by the id that container uid 1000 maps to (the first range's start + 999),
and only a process in such a namespace may create it: layers are unpacked, a
container's rootfs copied and their trees removed by a forked child that has made a
user namespace with the container's maps (`call`).

This module sits below the engine (`cove/image` imports only downwards), so the
engine's rootless module (cove/engine/rootless.py) uses it rather than the reverse.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from cove.errors import CoveError

T = TypeVar("T")

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
_HELPER_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")

# True in the child that `run_in_userns` forked, once its maps are written: there the
# euid is 0 but the kernel refuses what needs the host's root (device nodes, trusted.*).
INSIDE = False

IDMap = dict[str, int]


def _ranges(path: str, names: set[str]) -> list[tuple[int, int]]:
    """The (start, count) ranges that `path` grants any of `names` (user name or uid),
    in file order, as newuidmap reads them."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() \
                and parts[2].isdigit() and int(parts[2]) > 0:
            out.append((int(parts[1]), int(parts[2])))
    return out


def helper(name: str) -> str:
    """The path of newuidmap/newgidmap, or "" when it is not installed."""
    return next((p for p in (os.path.join(d, name) for d in _HELPER_DIRS)
                 if os.access(p, os.X_OK)), "")


def id_maps() -> tuple[list[IDMap], list[IDMap]]:
    """The rootless container's linux.uidMappings and gidMappings: 0 is the caller, then
    1.. the caller's subordinate ranges, in file order, where both files grant some and
    both helpers are installed (else only the caller's own id, as before: podman too
    falls back to that single mapping)."""
    uid, gid = os.geteuid(), os.getegid()
    umaps = [{"containerID": 0, "hostID": uid, "size": 1}]
    gmaps = [{"containerID": 0, "hostID": gid, "size": 1}]
    names = {str(uid)}
    try:
        import pwd
        names.add(pwd.getpwuid(uid).pw_name)
    except (KeyError, ImportError):
        pass
    uranges, granges = _ranges(SUBUID, names), _ranges(SUBGID, names)
    if uranges and granges and helper("newuidmap") and helper("newgidmap"):
        for maps, ranges in ((umaps, uranges), (gmaps, granges)):
            nxt = 1
            for start, count in ranges:
                maps.append({"containerID": nxt, "hostID": start, "size": count})
                nxt += count
    return umaps, gmaps


def mapped() -> bool:
    """Whether this (unprivileged) process's containers map more than its own id, so
    that their files need `call`."""
    return os.geteuid() != 0 and not INSIDE and len(id_maps()[0]) > 1


def map_size(maps: list[IDMap]) -> int:
    """How many container ids `maps` covers from 0 (they are contiguous)."""
    return max(m["containerID"] + m["size"] for m in maps)


def call(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, in a user namespace with the rootless container's maps when the
    caller has subordinate ids (see `mapped`), else right here."""
    if not mapped():
        return fn(*args)
    return run_in_userns(fn, *args)


def _newidmap(name: str, pid: int, maps: list[IDMap]) -> None:
    import subprocess
    exe = helper(name)
    argv = [exe, str(pid)]
    for m in maps:
        argv += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {r.returncode}"
        raise CoveError("rootless user namespace",
                        f"{name} failed: {why} (see /etc/sub{name[3:6]})")


def run_in_userns(fn: Callable[..., T], *args: Any) -> T:
    """Fork a child that unshares a user namespace, have newuidmap/newgidmap write its
    maps (`id_maps`), run `fn(*args)` there and hand back its result or exception
    (pickled through a pipe). The child is a fork, not a new program: `fn` sees this
    process's objects (an open store) and costs no interpreter start."""
    import pickle

    from cove.sys import libc
    umaps, gmaps = id_maps()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child: its result is what the parent checks)
        global INSIDE
        out: tuple[str, Any]
        try:
            import _signal
            for s in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT):
                _signal.signal(s, _signal.SIG_DFL)  # not the parent's Python handlers
            os.close(ready_r)
            os.close(go_w)
            os.close(res_r)
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.close(ready_w)
            if os.read(go_r, 1) != b"g":
                os._exit(1)
            INSIDE = True
            out = ("ok", fn(*args))
        except BaseException as e:
            out = ("err", e)
        try:
            data = pickle.dumps(out)
        except Exception as e:
            data = pickle.dumps(("err", RuntimeError(f"{type(out[1]).__name__}: {e}")))
        view = memoryview(data)
        while view:
            view = view[os.write(res_w, view):]
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.close(res_w)
    try:
        try:
            if os.read(ready_r, 1) != b"u":
                raise CoveError("rootless user namespace", "the child could not unshare one")
            _newidmap("newuidmap", pid, umaps)
            _newidmap("newgidmap", pid, gmaps)
            os.write(go_w, b"g")
        finally:
            os.close(ready_r)
            os.close(go_w)
        chunks = []
        while chunk := os.read(res_r, 1 << 16):
            chunks.append(chunk)
    except BaseException:
        os.close(res_r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    os.close(res_r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise CoveError("rootless user namespace",
                        f"its process ended with wait status {status} and no result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "err":
        raise value
    result: T = value
    return result
