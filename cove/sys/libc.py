"""ctypes wrappers for the Linux syscalls that Python 3.11's `os` lacks.

Each wrapper raises `OSError(errno, message)` whose message names the operation and
its path, so that a failure deep in container setup still says what it was doing.
Only `_ctypes` (through cove.sys.ffi) and `os` are imported: this module sits on
cove-runtime's hot path.
"""

from __future__ import annotations

import os

# `ctypes`' names from `_ctypes`, without ctypes/__init__'s start-up cost (ffi.py).
from cove.sys import ffi as ctypes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)

# unshare(2) / clone(2) namespace flags.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155
_SYS_SETNS = 308
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_OPENAT2 = 437
_SYS_CLONE3 = 435

CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.personality.argtypes = [ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _fail(op: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    msg = f"{op} {path}: {os.strerror(err)}" if path else f"{op}: {os.strerror(err)}"
    return OSError(err, msg)


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2); the error names the target."""
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail(f"mount {source or fstype or ''} on", target)


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        raise _fail("umount", target)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    if _libc.syscall(_SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail("setns", what or str(fd))


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)) != 0:
        raise _fail("pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    r: int = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if r < 0:
        raise _fail(f"prctl({option})")
    return r


def sethostname(name: str) -> None:
    b = name.encode()
    if _libc.sethostname(b, len(b)) != 0:
        raise _fail("sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    if _libc.setdomainname(b, len(b)) != 0:
        raise _fail("setdomainname", name)


def personality(persona: int) -> None:
    if _libc.personality(persona) == -1:
        raise _fail("personality")


class _CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork(), the child born in the cgroup2 directory `cgroup_fd` (clone3 with
    CLONE_INTO_CGROUP, Linux 5.7): 0 in the child, its pid in the parent.

    Why: moving a process into a cgroup2 cgroup afterwards (a write to cgroup.procs)
    takes the kernel's cgroup_threadgroup_rwsem for writing, whose first writer in a
    while waits out an RCU grace period (7-17 ms here) holding cgroup_mutex. A child
    born in the cgroup only takes that lock for reading. The caller must be
    single-threaded, as Python's own fork would warn: this is the raw system call,
    made with the GIL held so that the child finds it held by its only thread, and
    without Python's at-fork handlers (the caller runs none). Raises OSError where the
    kernel or a seccomp filter refuses it (the caller falls back to fork and a move)."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=cgroup_fd)
    global _clone3
    if _clone3 is None:
        _clone3 = ctypes.PyDLL(None, use_errno=True).syscall
        _clone3.restype = ctypes.c_long
    pid: int = _clone3(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                       ctypes.c_size_t(ctypes.sizeof(args)))
    if pid < 0:
        raise _fail("clone3 into a cgroup")
    return pid


_clone3: Any = None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if _libc.syscall(_SYS_CAPGET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _fail("capget")
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    m = 0xFFFFFFFF
    data[0].effective, data[1].effective = effective & m, effective >> 32
    data[0].permitted, data[1].permitted = permitted & m, permitted >> 32
    data[0].inheritable, data[1].inheritable = inheritable & m, inheritable >> 32
    if _libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _fail("capset")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under `resolve` restrictions."""
    how = _OpenHow(flags, mode, resolve)
    fd: int = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                            ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        raise _fail("openat2", path)
    return fd


PROC_SUPER_MAGIC = 0x9FA0
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]


def fstatfs_type(fd: int) -> int:
    """f_type of fstatfs(2): which filesystem `fd` is on."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first long
    if _libc.fstatfs(fd, buf) != 0:
        raise _fail("fstatfs")
    return ctypes.c_long.from_buffer(buf).value


F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
_libc.fcntl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]


def add_seals(fd: int, seals: int) -> None:
    """fcntl(F_ADD_SEALS) on a memfd (the `fcntl` module is not loaded on our hot path)."""
    if _libc.fcntl(fd, F_ADD_SEALS, seals) != 0:
        raise _fail("fcntl F_ADD_SEALS")


SPLICE_F_NONBLOCK = 0x2
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
_libc.tee.restype = ctypes.c_ssize_t


def tee(fd_in: int, fd_out: int, length: int, flags: int = SPLICE_F_NONBLOCK) -> int:
    """tee(2): copy up to `length` bytes from pipe `fd_in` into pipe `fd_out` without
    consuming them: a peek, so that what a reader has not yet stored stays in the pipe
    if the reader dies (the monitor's log copy). EAGAIN raises BlockingIOError."""
    n = _libc.tee(fd_in, fd_out, length, flags)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"tee: {os.strerror(err)}")
    return int(n)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_libc.socket.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def link_up(ifname: str) -> None:
    """Set IFF_UP on an interface of the current network namespace: SIOCGIFFLAGS, then
    SIOCSIFFLAGS on an AF_INET datagram socket (struct ifreq: the name, then the flags
    as a short at offset 16), without importing `socket` (it imports `enum`) or
    `fcntl` on the runtime's path."""
    name = ifname.encode()
    if len(name) >= 16:
        raise OSError(22, f"link up {ifname}: name too long")
    fd = _libc.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM | SOCK_CLOEXEC
    if fd < 0:
        raise _fail("socket(AF_INET, SOCK_DGRAM)")
    try:
        ifr = ctypes.create_string_buffer(name, 40)
        if _libc.ioctl(fd, _SIOCGIFFLAGS, ifr) != 0:
            raise _fail("SIOCGIFFLAGS", ifname)
        flags = ctypes.c_short.from_buffer(ifr, 16)
        if flags.value & IFF_UP:
            return
        flags.value |= IFF_UP
        if _libc.ioctl(fd, _SIOCSIFFLAGS, ifr) != 0:
            raise _fail("SIOCSIFFLAGS", ifname)
    finally:
        os.close(fd)
