"""The few path helpers of `os.path` that the short verbs use, on the built-in `posix`.

cove-runtime's `start`, `kill` and `state` are a bare interpreter's start-up plus a few
milliseconds, and a container engine calls them several times per container (the CRI
shim: 7 of the 9 calls on a pod's path). `import os` alone costs ~1.6 ms of CPU there
(os, _collections_abc, posixpath, genericpath: `python -IS` imports none of them; the
bare interpreter's start is ~9.5 ms on the build VM), so the modules on those verbs'
path (cove.runtime.boot, cove.cli.runtime, cove.runtime.state, start, kill) call
`posix` directly, which `os` re-exports, and take these helpers from here: the same
results as posixpath's for str paths. Verbs that need more (create, delete's cgroups)
import `os` as usual.
"""

from __future__ import annotations

import posix

_S_IFMT, _S_IFDIR, _S_IFLNK = 0o170000, 0o040000, 0o120000


def join(a: str, *parts: str) -> str:
    """posixpath.join for str."""
    path = a
    for b in parts:
        if b.startswith("/"):
            path = b
        elif not path or path.endswith("/"):
            path += b
        else:
            path += "/" + b
    return path


def dirname(p: str) -> str:
    """posixpath.dirname."""
    head = p[:p.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def exists(p: str) -> bool:
    try:
        posix.stat(p)
    except (OSError, ValueError):
        return False
    return True


def isdir(p: str) -> bool:
    try:
        return posix.stat(p).st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False


def islink(p: str) -> bool:
    try:
        return posix.lstat(p).st_mode & _S_IFMT == _S_IFLNK
    except (OSError, ValueError):
        return False


def getenv(name: str, default: str = "") -> str:
    """os.environ.get: the variable decoded as os.environ does (the file-system
    encoding, UTF-8 here, with surrogateescape)."""
    v = posix.environ.get(name.encode())
    return default if v is None else v.decode("utf-8", "surrogateescape")


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """`path` replaced whole by `data` (a temp file beside it, renamed over it): a
    reader sees the old content or the new, never a part. The temp file is removed
    on failure; the OSError propagates."""
    tmp = path + ".tmp"
    try:
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                        mode)
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
        posix.rename(tmp, path)
    except OSError:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        raise
