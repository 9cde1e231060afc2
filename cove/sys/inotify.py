"""inotify(7), for waits that would otherwise poll the file system.

`cove run` follows its container's log until the container's record says it exited;
polling both every 5 ms cost a run 2.5 ms on average after the exit. A watch on the
container's directory wakes the follower when the log grows or the record is replaced
(written to a temporary file and renamed over it). Only the wake-up matters: callers
re-read what they watch, so a lost or merged event costs at most one fallback timeout.
"""

from __future__ import annotations

import os

from cove.sys import ffi as ctypes

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def watch(path: str, mask: int) -> int:
    """A non-blocking, close-on-exec inotify fd watching `path` for `mask`'s events
    (the caller closes it); OSError where the kernel refuses (e.g. the per-user limit
    of instances, fs.inotify.max_user_instances)."""
    fd: int = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"inotify_init1: {os.strerror(e)}")
    if _libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        e = ctypes.get_errno()
        os.close(fd)
        raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}")
    return fd


def drain(fd: int) -> None:
    """Read away the pending events (their content is not needed: see the module)."""
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass
