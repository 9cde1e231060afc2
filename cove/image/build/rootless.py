"""Rootless builds: the whole build in a user namespace of its own, as `buildah bud` run
by an ordinary user (buildah re-executes itself under `buildah unshare`).

Why the whole build and not each step: a step's overlay must be mounted, written,
diffed and unmounted by one process that is root in a user namespace (the kernel lets
such a process mount overlayfs, with `userxattr`), and the files that COPY --chown and
RUN make must be owned by the ids that container uids map to. So `call` forks a child
that unshares a user namespace, has newuidmap/newgidmap map container uid 0 to the
caller and 1.. to the caller's /etc/subuid and /etc/subgid ranges (the maps a rootless
`cove run` gives its containers, cove.image.userns.id_maps), unshares a mount namespace
(the overlays are seen by no one else and vanish with it), and runs the build there.
Inside, a file of container uid 1000 is owned by uid 1000 as `stat` sees it, so the
layer writer puts 1000 (not the host id) into the tar, and a layer unpacked there gets
its owners back the same way; the store is the caller's own ($XDG_DATA_HOME/cove).

Progress lines come back to the caller through a pipe as they are written (so the API
server's stream works the same way), then the result or the error. A signal the caller
gets (SIGINT, SIGTERM, SIGHUP) is passed on once: the child, in a process group of its
own so a terminal's Ctrl-C reaches it only through that, cleans up as a root build does
(the step's container killed, its mount and directory removed) and ends with
KeyboardInterrupt, which the caller raises in turn. If the caller dies, the child gets
SIGTERM (PR_SET_PDEATHSIG).

RUN: cove-runtime runs inside that namespace as `--rootless true`, with a spec that
makes a nested user namespace mapping every id to itself (so the runtime's root-in-a-
user-namespace paths apply: device nodes bound, not made), no cgroup, /sys bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cove.errors import CoveError
from cove.image import userns

T = TypeVar("T")

# True in the child that `call` forked, once its maps are written
_INSIDE = False
USER_OPAQUE = "user.overlay.opaque"
# a snapshot dir's mark that its whiteouts and opaque dirs are also overlayfs markers
# a userxattr mount reads (a 0:0 node per whiteout, user.overlay.opaque=y)
_MARKED = "userxattr-marked"
_FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def inside() -> bool:
    return _INSIDE


def needed() -> bool:
    """Whether a build must go into a user namespace of its own (not root, not there)."""
    return os.geteuid() != 0 and not _INSIDE and not userns.INSIDE


def check() -> None:
    """One line, before anything is made, when this user cannot build rootless."""
    import pwd
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    for h in ("newuidmap", "newgidmap"):
        if not userns.helper(h):
            raise CoveError("rootless build", f"{h} is not installed (Debian: the uidmap "
                                              "package)")
    if len(userns.id_maps()[0]) < 2:
        raise CoveError("rootless build", f"user {name} has no subordinate ids in "
                        f"{userns.SUBUID} and {userns.SUBGID} (a build maps container ids "
                        f"1.. to them: usermod --add-subuids 100000-165535 "
                        f"--add-subgids 100000-165535 {name})")


# -- the child ----------------------------------------------------------------------------

def _send(fd: int, kind: bytes, data: bytes) -> None:
    view = memoryview(kind + struct.pack("<I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _interrupted(_sig: int, _frame: object) -> None:  # pragma: no cover (in the fork)
    raise KeyboardInterrupt   # cleaned up as Ctrl-C is


def _child(fn: Callable[..., T], args: tuple[Any, ...], ready_w: int, go_r: int,
           res_w: int) -> None:  # pragma: no cover (runs in the fork; checked by its result)
    global _INSIDE
    from cove.sys import libc
    out: tuple[str, Any]
    try:
        with contextlib.suppress(ValueError):   # (the fork's thread is its main one)
            signal.set_wakeup_fd(-1)   # not the caller's event loop (the API server's)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for s in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, _interrupted)
        os.setpgid(0, 0)
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGTERM)
        libc.unshare(libc.CLONE_NEWUSER)
        os.write(ready_w, b"u")
        os.close(ready_w)
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        os.close(go_r)
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        _INSIDE = True
        userns.INSIDE = True   # layers: no device nodes, owners as the namespace maps them
        out = ("ok", fn(*args, lambda line: _send(res_w, b"L", line.encode(
            "utf-8", "surrogateescape"))))
    except BaseException as e:
        out = ("err", e)
    try:
        data = pickle.dumps(out)
    except Exception as e:
        data = pickle.dumps(("err", RuntimeError(f"{type(out[1]).__name__}: {e}")))
    with contextlib.suppress(OSError):
        _send(res_w, b"R", data)
    import sys
    for f in (sys.stdout, sys.stderr):   # what the build printed itself (os._exit does not)
        with contextlib.suppress(Exception):
            f.flush()
    os._exit(0)


def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return buf
        buf += chunk
    return buf


def call(fn: Callable[..., T], *args: Any, out: Callable[[str], None]) -> T:
    """`fn(*args, out_in_child)` in a forked child in a user and mount namespace of its
    own (see the module's doc); its lines go to `out` here as they come."""
    check()
    umaps, gmaps = userns.id_maps()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(ready_r)
        os.close(go_w)
        os.close(res_r)
        _child(fn, args, ready_w, go_r, res_w)
    os.close(ready_w)
    os.close(go_r)
    os.close(res_w)
    saved = _forward_signals(pid)
    try:
        try:
            if os.read(ready_r, 1) != b"u":
                raise CoveError("rootless build", "could not make a user namespace")
            userns._newidmap("newuidmap", pid, umaps)
            userns._newidmap("newgidmap", pid, gmaps)
            os.write(go_w, b"g")
        finally:
            os.close(ready_r)
            os.close(go_w)
        result: tuple[str, Any] | None = None
        while (head := _read_exact(res_r, 5)) and len(head) == 5:
            data = _read_exact(res_r, struct.unpack("<I", head[1:])[0])
            if head[:1] == b"L":
                out(data.decode("utf-8", "surrogateescape"))
            else:
                result = pickle.loads(data)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(res_r)
        os.waitpid(pid, 0)
        _restore_signals(saved)
    if result is None:
        raise CoveError("rootless build", "its process ended with no result")
    if result[0] == "err":
        raise result[1]
    value: T = result[1]
    return value


def _forward_signals(pid: int) -> dict[int, Any]:
    """While the child runs, a signal for us is passed on to it (once each): it cleans
    up and reports KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    sent: set[int] = set()

    def forward(sig: int, _frame: object) -> None:
        if sig not in sent:
            sent.add(sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return {s: signal.signal(s, forward) for s in _FORWARD}


def _restore_signals(saved: dict[int, Any]) -> None:
    for s, h in saved.items():
        signal.signal(s, h)


# -- inside: the step's overlay and the runtime's spec ------------------------------------

def mark_snapshot(snapshot: str) -> None:
    """Give a snapshot unpacked in a user namespace (without overlayfs's trusted.*
    markers, which only the host's root may set) the markers a `userxattr` overlay
    reads: a 0:0 character device per whiteout (which the kernel lets an unprivileged
    process make) and user.overlay.opaque=y on each opaque directory. Once per
    snapshot; the copy fallback of a rootless `cove run` skips them as before."""
    done = os.path.join(snapshot, _MARKED)
    if os.path.exists(done):
        return
    import stat

    from cove.image.layers import Whiteouts
    fs = os.path.join(snapshot, "fs")
    wh = Whiteouts.load(os.path.join(snapshot, "whiteouts.json"))
    for w in wh.whiteouts:
        path = os.path.join(fs, w)
        if not os.path.lexists(path) and os.path.isdir(os.path.dirname(path)) and \
                not os.path.islink(os.path.dirname(path)):
            with contextlib.suppress(FileExistsError):
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    for d in wh.opaque:
        target = os.path.join(fs, d) if d else fs
        if os.path.isdir(target) and not os.path.islink(target):
            os.setxattr(target, USER_OPAQUE, b"y")
    with open(done + ".tmp", "w"):
        pass
    os.replace(done + ".tmp", done)


def mount_overlay(snaps: list[str], cdir: str, snapshot_dir: str) -> str:
    """The merged rootfs of `snaps` (bottom first) over `cdir/upper`, mounted with
    `userxattr` (the only way overlayfs records opaque directories for a mount made in
    a user namespace); lowerdirs relative to the snapshot dir, each once, as
    cove.image.snapshots mounts them. Returns the merged path."""
    from cove.sys import libc
    merged, upper, work = (os.path.join(cdir, x) for x in ("merged", "upper", "work"))
    os.mkdir(merged, 0o755)
    os.mkdir(upper, 0o755)
    os.mkdir(work, 0o700)
    for s in snaps:
        mark_snapshot(s)
    lowers = [os.path.join(s, "fs") for s in reversed(snaps)]
    if not lowers:
        empty = os.path.join(cdir, "empty")
        os.mkdir(empty, 0o755)
        lowers = [empty]
    rel = [os.path.relpath(x, snapshot_dir) for x in dict.fromkeys(lowers)]
    data = f"lowerdir={':'.join(rel)},upperdir={upper},workdir={work},userxattr"
    if len(data) >= 4096:
        raise CoveError("build", f"{len(lowers)} layers: overlay options too long")
    old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(snapshot_dir)
        libc.mount("overlay", merged, "overlay", 0, data)
    finally:
        os.fchdir(old)
        os.close(old)
    with open(os.path.join(cdir, "rootfs.json"), "w") as f:
        json.dump({"mode": "overlay", "image": ""}, f)
    return merged


def _identity(path: str) -> list[dict[str, int]]:
    """Each extent of our map (/proc/self/uid_map) mapped to itself: a nested map's
    range must lie within one extent of ours, so one mapping per extent."""
    with open(path) as f:
        return [{"containerID": int(p[0]), "hostID": int(p[0]), "size": int(p[2])}
                for line in f if len(p := line.split()) == 3]


def adapt_spec(spec: dict[str, Any]) -> None:
    """A root build step's spec made to run under `cove-runtime --rootless true` in
    our user namespace: a nested user namespace mapping each of our ids to itself (extent by
    extent),
    no cgroup (no resources, no cgroup mount), the host's /sys bound read-only (a
    sysfs needs a network namespace that the namespace owns; --network host has
    not)."""
    lin = spec["linux"]
    lin.pop("resources", None)
    if not any(n.get("type") == "user" for n in lin["namespaces"]):
        lin["namespaces"].append({"type": "user"})
    lin["uidMappings"] = _identity("/proc/self/uid_map")
    lin["gidMappings"] = _identity("/proc/self/gid_map")
    mounts = []
    for m in spec["mounts"]:
        if m["type"] == "cgroup":
            continue
        if m["type"] == "sysfs":
            m = {"destination": "/sys", "type": "none", "source": "/sys",
                 "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        mounts.append(m)
    spec["mounts"] = mounts
