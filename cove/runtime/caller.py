"""The runtime's side of what it exchanges with its caller (containerd's shim, conmon,
the engine, a shell): the bundle it reads, the pid file it writes, the console socket
it sends a pty over, the foreground wait that passes signals on, and the relay between
the caller's terminal and the container's pty. (What the caller asks for, the options
of create/run and exec, is in the package's __init__: see there why.)

Library code shared by the verbs (`create`, `run`, `exec`), the vm and gvisor handlers
and the engine's `cove run -t` (a public entry point of the runtime). One module, not
two, on purpose: `create`, `run` and `exec` load it on their hot path, whose import
budget counts modules. Only C modules and `os` at import time.
"""

from __future__ import annotations

import _signal
import os

from cove.errors import CoveError, os_why
from cove.oci.spec import Spec

# Signals a foreground runtime passes on to the container, as runc does.
FORWARD = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM
_SIGWINCH = 28
_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


def load_bundle(bundle: str) -> tuple[str, bytes, Spec, str]:
    """(absolute bundle, config bytes, parsed spec, absolute rootfs)."""
    bundle = os.path.abspath(bundle or ".")
    cfg_path = os.path.join(bundle, "config.json")
    try:
        with open(cfg_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CoveError(f"bundle {bundle}", f"config.json: {e.strerror}") from None
    spec = Spec.parse(raw)
    if spec.process is None:
        raise CoveError("process", "required field is missing")
    if spec.root is None:
        raise CoveError("root", "required field is missing")
    rootfs = os.path.join(bundle, spec.root.path)
    if not os.path.isdir(rootfs):
        raise CoveError(f"root.path {spec.root.path}", "rootfs directory does not exist")
    return bundle, raw, spec, os.path.realpath(rootfs)


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, as runc: containerd and conmon read it as soon as we exit."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def wants_terminal(bundle: str) -> bool:
    """Whether the bundle asks for a terminal (read cheaply, before create parses it)."""
    from cove.oci import jsonio

    try:
        with open(os.path.join(bundle or ".", "config.json"), "rb") as f:
            cfg = jsonio.loads(f.read())
        return bool(cfg.get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False  # create reports the real problem


def connect_console(path: str) -> int:
    """A connected socket to --console-socket, to send the pty master over."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise CoveError(f"--console-socket {path}", os_why(e)) from None
    return s.detach()


def recv_master(sock_fd: int, what: str = "run") -> int:
    """The pty master the container's side sends over `sock_fd` (closed here)."""
    import _socket

    s = _socket.socket(fileno=sock_fd)
    try:
        _msg, anc, _flags, _addr = s.recvmsg(4096, 64)
    finally:
        s.close()
    for level, typ, data in anc:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS and len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    raise CoveError(what, "the container sent no terminal")


def forward_signals(pid: int, winch_to: int = -1) -> None:
    """Pass FORWARD signals on to `pid`; SIGWINCH too, or (winch_to) copy our window
    size to that pty instead."""
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def winch(_signum: int, _frame: object) -> None:
        copy_winsize(0, winch_to)

    for s in FORWARD:
        _signal.signal(s, forward)
    _signal.signal(_SIGWINCH, winch if winch_to >= 0 else forward)


def copy_winsize(src: int, dst: int) -> None:
    import fcntl

    try:
        ws = fcntl.ioctl(src, _TIOCGWINSZ, bytes(8))
        fcntl.ioctl(dst, _TIOCSWINSZ, ws)
    except OSError:
        pass


def wait_forwarding(pid: int, forward: bool = True) -> int:
    """Wait for `pid` (our child, or adopted as subreaper); return its shell-style code."""
    if forward:
        forward_signals(pid)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


def relay(master: int, pid: int) -> None:
    """Copy stdin -> pty and pty -> stdout until the container's side closes."""
    import select

    attrs = None
    if os.isatty(0):
        import termios
        import tty

        attrs = termios.tcgetattr(0)
        tty.setraw(0)
        copy_winsize(0, master)
    forward_signals(pid, winch_to=master)
    fds = [master, 0]
    try:
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    return
                if not data:
                    return
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    fds.remove(0)  # stdin closed: keep relaying output
    finally:
        if attrs is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, attrs)
