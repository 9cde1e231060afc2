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

import ctypes

from cove.errors import CoveError

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
    return msg


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

    from cove.oci import jsonio
    from cove.runtime.state import OCI_VERSION

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


def compile_filter(sc: dict[str, Any], nnp: bool = True) -> Filter:
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
        for name in rule.get("names") or []:
            if not isinstance(name, str):
                raise CoveError(f"{rp}.names", "expected string")
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:
                continue  # unknown to this libseccomp/kernel: skip, as runc does
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
