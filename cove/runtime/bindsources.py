"""Bind sources opened on the host's side for a container in a user namespace: the
runtime's helper opens each bind mount's source inside the container's mount namespace
(`send_bind_sources`) and init takes the handles (`recv_bind_sources`), so a source
under a directory the container's root cannot search still binds. And the shared
propagation case's parent mount (`private_parent_mount`). Apart from cove/runtime/
rootfs.py because a plain `run` (no user namespace, default propagation) needs none
of it: cove-runtime's start-up budget (tests/runtime/test_hotpath.py) stays as it is."""

from __future__ import annotations

import os
import sys

from cove.errors import CoveError, os_why
from cove.sys import libc

# Handles per message: under the kernel's SCM_MAX_FD (253).
_SOURCES_PER_MSG = 128


def send_bind_sources(init_pid: int, sources: list[tuple[int, str]],
                      socks: tuple[int, int]) -> int:
    """Open every bind source as the host's root, from inside the container's mount
    namespace, and pass the handles to init over socks[1] (a SOCK_SEQPACKET pair;
    init takes them from socks[0] with recv_bind_sources). runc 1.1 does the same.
    Returns the helper's pid, to be waited for once init is running: init reads while
    the helper writes, so no number of sources fills the socket's queue.

    Why: init runs in the container's user namespace, whose root is a uid the host
    does not map to anyone privileged, so it cannot search (say) a 0700 directory of
    the host's root, and a bind source under one failed with EACCES. Why this way: the
    kernel binds only from mounts of the caller's own mount namespace, so a handle
    opened before the namespace existed would not do; and an open_tree(2) clone made
    on the host would, but its mount flags would not be locked, letting the container
    make a read-only host mount writable. So a helper forked here (single-threaded, the
    host's root) joins init's mount namespace and opens the sources there: they are the
    copies made with the namespace, with the flags the kernel locked. Failures travel
    to init, which reports each as before ("mounts[i] (bind SRC on DST): why")."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(socks[0])  # init's end: a send fails, not blocks, once init is gone
            _open_and_send(init_pid, sources, socks[1])
            code = 0
        except BaseException as e:  # never return into the runtime's code in a child
            why = os_why(e) if isinstance(e, OSError) else str(e)
            try:
                _send(socks[1], f"fail {why}", [])
            except OSError:
                pass
        os._exit(code)
    return pid


def _open_and_send(init_pid: int, sources: list[tuple[int, str]], sock: int) -> None:
    ns = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    libc.setns(ns, libc.CLONE_NEWNS, "the container's mount namespace")
    os.close(ns)
    for k in range(0, len(sources), _SOURCES_PER_MSG):
        errs: list[str] = []
        fds: list[int] = []
        for _i, src in sources[k:k + _SOURCES_PER_MSG]:
            try:
                fds.append(os.open(src, os.O_PATH | os.O_CLOEXEC))
                errs.append("0")
            except OSError as e:
                errs.append(str(e.errno))
        _send(sock, "ok " + " ".join(errs), fds)
        for fd in fds:
            os.close(fd)


def _send(sock: int, text: str, fds: list[int]) -> None:
    import _socket

    s = _socket.socket(fileno=sock)
    try:
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else []
        s.sendmsg([text.encode()], anc)
    finally:
        s.detach()


def recv_bind_sources(sock: int, other_end: int,
                      sources: list[tuple[int, str]]) -> dict[int, int | OSError]:
    """Init's side of send_bind_sources: mounts[i] -> a handle, or the OSError that
    opening its source met. Closes both ends of the pair."""
    import _socket

    os.close(other_end)  # ours: EOF, not a hang, if the helper dies without a word
    s = _socket.socket(fileno=sock)
    out: dict[int, int | OSError] = {}
    try:
        pending = sources
        while pending:
            msg, anc, flags, _addr = s.recvmsg(
                4096, _socket.CMSG_SPACE(4 * _SOURCES_PER_MSG))
            fds: list[int] = []
            for level, typ, data in anc:
                if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
                    fds += [int.from_bytes(data[j:j + 4], sys.byteorder)
                            for j in range(0, len(data) - len(data) % 4, 4)]
            text = msg.decode(errors="replace")
            errs = text.split()[1:]
            if (not text.startswith("ok ") or flags & _socket.MSG_CTRUNC
                    or not 0 < len(errs) <= len(pending) or errs.count("0") != len(fds)):
                for fd in fds:
                    os.close(fd)
                why = (text[5:] if text.startswith("fail ") else
                       "the runtime's helper exited without sending them" if not text else
                       "handles lost in transit")
                raise CoveError("bind mount sources", why)
            it = iter(fds)
            for (i, src), e in zip(pending[:len(errs)], errs, strict=True):
                out[i] = next(it) if e == "0" else OSError(int(e), os.strerror(int(e)), src)
            pending = pending[len(errs):]
    except BaseException:
        for h in out.values():
            if isinstance(h, int):
                os.close(h)
        raise
    finally:
        s.close()
    return out


def private_parent_mount(path: str) -> None:
    """Make the mount holding `path` private if it is shared (mountinfo's `shared:`)."""
    path = os.path.realpath(path)
    best, shared = "", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best = mp
                shared = any(o.startswith("shared:") for o in fields[6:fields.index("-")])
    if best and shared:
        libc.mount(None, best, None, libc.MS_PRIVATE)
