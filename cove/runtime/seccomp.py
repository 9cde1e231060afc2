"""OCI `linux.seccomp` compiled with libseccomp (libseccomp.so.2, through ctypes).

Semantics follow runc: unknown syscall names are skipped (profiles name syscalls of
newer kernels), rules whose action equals the default are dropped, several
conditions on the same argument become separate rules (libseccomp refuses them in
one), and SCMP_ACT_ERRNO without errnoRet means EPERM.

SCMP_ACT_NOTIFY (the OCI spec's "seccomp notify"): the container side loads the
filter while its channel to the runtime is still open and says "seccomp N" (N: its
listener fd); the runtime takes the fd with pidfd_getfd (the container side is in
other namespaces, and may no longer see the host's paths), connects to
`listenerPath` and sends the container state JSON with the fd (SCM_RIGHTS), then
answers "ok"; only then does the container side go on to execve.
"""

from __future__ import annotations

from cove.errors import CoveError
from cove.sys import ffi as ctypes  # ctypes' names, without its start-up (ffi.py)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000, "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# Filter attributes (enum scmp_filter_attr).
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5; level 2: a binary tree of syscall numbers
_FLAG_ATTRS = {"SECCOMP_FILTER_FLAG_TSYNC": 4, "SECCOMP_FILTER_FLAG_LOG": 6,
               "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 12}
_EPERM = 1


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2")
        except OSError:
            raise CoveError("linux.seccomp", "libseccomp.so.2 is not installed "
                            "(Debian: apt install libseccomp2)") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def _action(name: Any, errno_ret: Any, what: str) -> int:
    if name not in _ACTIONS:
        raise CoveError(what, f"unknown seccomp action {name!r}")
    act = _ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        if errno_ret is not None and (not isinstance(errno_ret, int) or errno_ret < 0):
            raise CoveError(what.rsplit(".", 1)[0] + ".errnoRet", "expected unsigned integer")
        act |= (errno_ret if errno_ret is not None else _EPERM) & 0xFFFF
    return act


class Filter:
    """A compiled libseccomp filter, loaded into the calling thread by `load()`."""

    def __init__(self, ctx: int, notify: bool) -> None:
        self.ctx = ctx
        self.notify = notify

    def load(self) -> int:
        """Load into the calling thread; return the listener fd (notify), else -1."""
        import os

        lib = _libseccomp()
        rc = lib.seccomp_load(self.ctx)
        if rc < 0:
            raise CoveError("seccomp", f"loading the filter: {os.strerror(-rc)}")
        if not self.notify:
            return -1
        fd: int = lib.seccomp_notify_fd(self.ctx)
        if fd < 0:
            raise CoveError("seccomp", f"no notify fd: {os.strerror(-fd)}")
        return fd


def wants_notify(sc: dict[str, Any]) -> bool:
    """Whether a profile has SCMP_ACT_NOTIFY rules (the runtime then serves the listener).
    Here rather than cove.oci.seccomp_default's copy: importing that module (Docker's
    profile) costs every create and exec ~0.3 ms."""
    return any(isinstance(r, dict) and r.get("action") == "SCMP_ACT_NOTIFY"
               for r in sc.get("syscalls") or [])


def hand_over(sync: Any, fd: int) -> None:
    """Container side: pass the listener fd to the runtime (see the module doc)."""
    import os

    try:
        sync.send(f"seccomp {fd}")
        sync.expect("ok")
    finally:
        os.close(fd)


def expect_after_notify(sync: Any, what: str, pid: int, sc: dict[str, Any],
                        state: dict[str, Any]) -> str:
    """Runtime side: `sync.expect(what)`, serving a "seccomp N" that may come first."""
    msg = sync.recv()
    if msg is not None and msg.startswith("seccomp "):
        fd = _take_fd(pid, int(msg.split()[1]))
        try:
            send_to_listener(sc, fd, pid, state)
        finally:
            import os

            os.close(fd)
        sync.send("ok")
        msg = sync.recv()
    if msg is None:
        raise CoveError("container process", "exited during setup")
    if msg.startswith("error "):
        raise CoveError(msg[6:])
    if msg.split(" ", 1)[0] != what:
        raise CoveError("container process", f"unexpected message {msg!r}")
    return str(msg)


def _take_fd(pid: int, fd: int) -> int:
    import os

    pidfd = os.pidfd_open(pid)
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        got = lib.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(fd),
                          ctypes.c_uint(0))  # pidfd_getfd
        if got < 0:
            raise CoveError("seccomp notify", "pidfd_getfd: "
                            f"{os.strerror(ctypes.get_errno())}")
        return int(got)
    finally:
        os.close(pidfd)


def send_to_listener(sc: dict[str, Any], fd: int, pid: int, state: dict[str, Any]) -> None:
    """The OCI container process state, with the listener fd, to `listenerPath`."""
    import _socket

    from cove.oci import OCI_VERSION, jsonio

    path = sc.get("listenerPath") or ""
    msg: dict[str, Any] = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid,
                           "state": state}
    if sc.get("listenerMetadata"):
        msg["metadata"] = sc["listenerMetadata"]
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendmsg([jsonio.dumps(msg).encode()],
                  [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, "little"))])
    except OSError as e:
        from cove.errors import os_why

        raise CoveError(f"linux.seccomp.listenerPath {path}", os_why(e)) from None
    finally:
        s.close()


UNKNOWN_SYSCALLS_ANNOTATION = "io.cove.unknown-syscalls"


def compile_filter(sc: dict[str, Any], nnp: bool = True,
                   ignore_unknown: bool = False) -> Filter:
    """Build the libseccomp filter for `sc`. A syscall name libseccomp does not know is
    an error naming its JSON path (a typo would otherwise silently leave a hole or a
    block out), unless `ignore_unknown` (the annotation io.cove.unknown-syscalls=ignore:
    runc's behaviour, for profiles written for newer kernels)."""
    p = "linux.seccomp"
    lib = _libseccomp()
    default = _action(sc.get("defaultAction"), sc.get("defaultErrnoRet"), f"{p}.defaultAction")
    notify = any(isinstance(s, dict) and s.get("action") == "SCMP_ACT_NOTIFY"
                 for s in sc.get("syscalls") or [])
    if notify and not sc.get("listenerPath"):
        raise CoveError(f"{p}.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath")
    if sc.get("defaultAction") == "SCMP_ACT_NOTIFY":
        raise CoveError(f"{p}.defaultAction", "SCMP_ACT_NOTIFY may not be the default")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise CoveError(f"{p}.defaultAction", "libseccomp refused it")
    # We set no_new_privs ourselves, from process.noNewPrivileges.
    lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0)
    # A binary search over syscall numbers instead of libseccomp's default linear list:
    # the same decisions, but for Docker's profile the kernel's load (which emulates the
    # filter for every syscall number to build its allow-cache) drops from ~1.5 ms to
    # a fraction, and each syscall the container makes walks ~log2(n) jumps, not ~n.
    # Older libseccomp refuses the attribute: the linear filter is just as correct.
    lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)
    for i, arch in enumerate(sc.get("architectures") or []):
        if not isinstance(arch, str) or not arch.startswith("SCMP_ARCH_"):
            raise CoveError(f"{p}.architectures[{i}]", f"unknown architecture {arch!r}")
        token = lib.seccomp_arch_resolve_name(arch[10:].lower().encode())
        if token == 0:
            raise CoveError(f"{p}.architectures[{i}]", f"unknown architecture {arch!r}")
        rc = lib.seccomp_arch_add(ctx, token)
        if rc < 0 and rc != -17:  # -EEXIST: the native one is always there
            raise CoveError(f"{p}.architectures[{i}]", f"cannot add {arch}")
    for i, flag in enumerate(sc.get("flags") or []):
        if flag not in _FLAG_ATTRS:
            raise CoveError(f"{p}.flags[{i}]", f"unknown flag {flag!r}")
        if lib.seccomp_attr_set(ctx, _FLAG_ATTRS[flag], 1) < 0:
            raise CoveError(f"{p}.flags[{i}]", f"{flag} is not supported by libseccomp here")
    for i, rule in enumerate(sc.get("syscalls") or []):
        rp = f"{p}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise CoveError(rp, "expected object")
        act = _action(rule.get("action"), rule.get("errnoRet"), f"{rp}.action")
        if act == default:
            continue
        conds = _conditions(rule.get("args") or [], rp)
        for k, name in enumerate(rule.get("names") or []):
            if not isinstance(name, str):
                raise CoveError(f"{rp}.names[{k}]", "expected string")
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:
                if ignore_unknown:
                    continue
                raise CoveError(f"{rp}.names[{k}]",
                                f"unknown syscall {name!r} (annotation "
                                f"{UNKNOWN_SYSCALLS_ANNOTATION}=ignore skips such names)")
            for group in conds:
                arr = (_ArgCmp * len(group))(*group) if group else None
                rc = lib.seccomp_rule_add_array(ctx, act, nr, len(group), arr)
                if rc < 0:
                    import os

                    raise CoveError(rp, f"cannot add rule for {name}: {os.strerror(-rc)}")
    return Filter(ctx, notify=notify)


def _conditions(args: list[Any], rp: str) -> list[list[_ArgCmp]]:
    """Argument comparisons -> groups for seccomp_rule_add_array (one rule per group)."""
    cmps: list[_ArgCmp] = []
    for j, a in enumerate(args):
        ap = f"{rp}.args[{j}]"
        if not isinstance(a, dict):
            raise CoveError(ap, "expected object")
        idx, op = a.get("index"), a.get("op")
        if not isinstance(idx, int) or not 0 <= idx < 6:
            raise CoveError(f"{ap}.index", "expected integer 0-5")
        if op not in _OPS:
            raise CoveError(f"{ap}.op", f"unknown operator {op!r}")
        va, vb = a.get("value", 0), a.get("valueTwo", 0)
        if not isinstance(va, int) or not isinstance(vb, int):
            raise CoveError(f"{ap}.value", "expected integer")
        cmps.append(_ArgCmp(idx, _OPS[op], va & (2**64 - 1), vb & (2**64 - 1)))
    if not cmps:
        return [[]]
    if len({c.arg for c in cmps}) == len(cmps):
        return [cmps]
    # Several conditions on one argument: libseccomp wants them as separate rules.
    return [[c] for c in cmps]


# --- Compiled programs, cached -------------------------------------------------------
# libseccomp takes ~15 ms on this host to build and generate Docker's default profile,
# on every create. The BPF it generates depends only on the profile, the machine and
# the kernel, so the runtime keeps it in <root>/seccomp-cache/<sha256>.bpf and loads it
# with seccomp(2) directly: libseccomp still writes every program (no hand-written BPF),
# it just doesn't write the same one twice.

CACHE_DIR = "seccomp-cache"  # under the runtime's --root
_GEN = "tree"  # how compile_filter builds programs: part of the cache key
_SYS_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1
_KERNEL_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
                 "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
_FLAG_NEW_LISTENER = 8


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


class Program:
    """A BPF program that libseccomp generated, loaded by `load()` with seccomp(2)."""

    def __init__(self, bpf: bytes, flags: int, notify: bool) -> None:
        self.bpf = bpf
        self.flags = flags
        self.notify = notify

    def load(self) -> int:
        """Load into the calling thread; return the listener fd (notify), else -1."""
        import os

        from cove.sys.libc import _libc

        prog = _SockFprog(len(self.bpf) // 8, self.bpf)
        flags = self.flags | (_FLAG_NEW_LISTENER if self.notify else 0)
        r: int = _libc.syscall(_SYS_SECCOMP, ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                               ctypes.c_uint(flags), ctypes.byref(prog))
        if r < 0:
            raise CoveError("seccomp", f"loading the filter: {os.strerror(ctypes.get_errno())}")
        return r if self.notify else -1


def _digest(data: bytes) -> str:
    try:
        import _sha256 as sha  # 3.11: a C module, no hashlib/OpenSSL import
    except ImportError:
        import _sha2 as sha  # 3.12+
    return str(sha.sha256(data).hexdigest())


def program(sc: dict[str, Any], cache_dir: str, ignore_unknown: bool = False) -> Program:
    """The program for `sc`: from the cache, or compiled (and validated) by libseccomp."""
    import os

    from cove import __version__
    from cove.oci import jsonio

    flags = 0
    for f in sc.get("flags") or []:
        flags |= _KERNEL_FLAGS.get(f, 0)  # unknown names: compile_filter reports them
    notify = any(isinstance(s, dict) and s.get("action") == "SCMP_ACT_NOTIFY"
                 for s in sc.get("syscalls") or [])
    u = os.uname()
    key = _digest(f"{__version__}\0{_GEN}\0{ignore_unknown}\0{u.machine}\0{u.release}\0"
                  .encode()
                  + jsonio.dumps(sc).encode())
    path = os.path.join(cache_dir, f"{key}.bpf")
    try:
        with open(path, "rb") as fh:
            bpf = fh.read()
        if bpf and len(bpf) % 8 == 0:
            return Program(bpf, flags, notify)
    except OSError:
        pass
    filt = compile_filter(sc, ignore_unknown=ignore_unknown)
    lib = _libseccomp()
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    mfd = os.memfd_create("cove-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(filt.ctx, mfd)
        if rc < 0:
            raise CoveError("linux.seccomp", f"generating the filter: {os.strerror(-rc)}")
        os.lseek(mfd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(mfd, 1 << 16):
            chunks.append(chunk)
        bpf = b"".join(chunks)
    finally:
        os.close(mfd)
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release(filt.ctx)
    try:
        os.makedirs(cache_dir, 0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(bpf)
        os.rename(tmp, path)
    except OSError:
        pass  # a cache only
    return Program(bpf, flags, notify)
