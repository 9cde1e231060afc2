"""`run`: create + start, then (in the foreground) wait, forward signals, delete.

With process.terminal and no --console-socket, `run` makes the console socket itself
and relays between its own terminal and the container's pty, as runc does.
"""

from __future__ import annotations

import _signal
import os

from cove.errors import CoveError
from cove.runtime.create import CreateOptions, check_preserve_fds, create
from cove.runtime.delete import delete
from cove.runtime.start import start

# Signals a foreground runtime passes on to the container, as runc does.
_FORWARD = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM
_SIGWINCH = 28
_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


def _forward_signals(pid: int, winch_to: int = -1) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def winch(_signum: int, _frame: object) -> None:
        _copy_winsize(0, winch_to)

    for s in _FORWARD:
        _signal.signal(s, forward)
    _signal.signal(_SIGWINCH, winch if winch_to >= 0 else forward)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl

    try:
        ws = fcntl.ioctl(src, _TIOCGWINSZ, bytes(8))
        fcntl.ioctl(dst, _TIOCSWINSZ, ws)
    except OSError:
        pass


def wait_forwarding(pid: int, forward: bool = True) -> int:
    """Wait for `pid` (our child, or adopted as subreaper); return its shell-style code."""
    if forward:
        _forward_signals(pid)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


def _wants_terminal(bundle: str) -> bool:
    from cove.oci import jsonio

    try:
        with open(os.path.join(bundle or ".", "config.json"), "rb") as f:
            cfg = jsonio.loads(f.read())
        return bool(cfg.get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False  # create reports the real problem


def _recv_master(sock_fd: int) -> int:
    import _socket

    s = _socket.socket(fileno=sock_fd)
    try:
        _msg, anc, _flags, _addr = s.recvmsg(4096, 64)
    finally:
        s.close()
    for level, typ, data in anc:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS and len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    raise CoveError("run", "the container sent no terminal")


def _relay(master: int, pid: int) -> None:
    """Copy stdin -> pty and pty -> stdout until the container's side closes."""
    import select

    attrs = None
    if os.isatty(0):
        import termios
        import tty

        attrs = termios.tcgetattr(0)
        tty.setraw(0)
        _copy_winsize(0, master)
    _forward_signals(pid, winch_to=master)
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


def run(opts: CreateOptions, detach: bool) -> int:
    check_preserve_fds(opts)  # before our own socketpair takes fd 3
    ours = -1
    if not opts.console_socket and _wants_terminal(opts.bundle):
        if detach:
            raise CoveError("run --detach", "a terminal needs --console-socket")
        import _socket

        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        ours, opts.console_fd = a.detach(), b.detach()
    try:
        create(opts, subreaper=not detach)
    finally:
        if opts.console_fd >= 0:
            os.close(opts.console_fd)
            opts.console_fd = -1
    master = -1
    try:
        if ours >= 0:
            master = _recv_master(ours)
            ours = -1  # closed by _recv_master
        st = start(opts.root, opts.id)
    except BaseException:
        delete(opts.root, opts.id, force=True)
        raise
    if detach:
        return 0
    try:
        if master >= 0:
            _relay(master, st.pid)
            return wait_forwarding(st.pid, forward=False)
        return wait_forwarding(st.pid)
    finally:
        if master >= 0:
            os.close(master)
        delete(opts.root, opts.id, force=True)
