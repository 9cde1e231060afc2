"""A client of a terminal container's attach socket (cove/engine/ttywatch.py): `cove
attach` and `cove start -a` of a container with a terminal, and `cove run -t` in the
foreground (docker's create, attach, start).

The container runs under the monitor like any other: this process only relays. Its
output is written to our stdout as it comes (raw: the container's terminal makes its
`\\r\\n`); our stdin, when the container keeps one open (`-i`, docker's OpenStdin),
goes to the container's terminal, and from a terminal ours is raw meanwhile (^C is a
byte for the container's terminal, which makes it SIGINT for its foreground job). The
detach keys (docker's ctrl-p ctrl-q) end the relay and leave the container running;
our window size follows (SIGWINCH) as the container's terminal size.

When the connection ends and the container still runs, its monitor was killed: we
connect again to the next one (the keeper starts it at once) and go on.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from cove.engine import state, ttywatch
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from cove.engine.container.record import Record

ACTIVE = ("running", "paused", "restarting")


class Conn:
    """A connection to a container's attach socket."""

    def __init__(self, cdir: str, from_start: bool = False, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                ttywatch.at(cdir, ttywatch.ATTACH_SOCK, s.connect)
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    raise CoveError("attach", f"the container's terminal does not answer: "
                                              f"{e.strerror}") from None
                time.sleep(0.02)
        self.sock = s
        self.lock = threading.Lock()
        self.send(b"s" if from_start else b"n")

    def send(self, msg: bytes) -> bool:
        with self.lock:
            try:
                self.sock.send(msg)
                return True
            except OSError:
                return False

    def input(self, data: bytes) -> bool:
        for i in range(0, len(data), 32768):
            if not self.send(b"i" + data[i:i + 32768]):
                return False
        return True

    def resize(self, rows: int, cols: int) -> None:
        self.send(b"r" + rows.to_bytes(2, "little") + cols.to_bytes(2, "little"))

    def recv(self, timeout: float | None = None) -> bytes | None:
        """Output; b"" at the end; None when `timeout` passed first."""
        if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
            return None
        try:
            return self.sock.recv(1 << 16)
        except OSError:
            return b""

    def close(self) -> None:
        self.sock.close()


def connect(cdir: str, cid: str | None, from_start: bool = False,
            timeout: float = 10.0) -> Conn | None:
    """A connection to the container's terminal, or None once it no longer runs (a
    short run may be over before we come: its output is in its log)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Conn(cdir, from_start, timeout=0)
        except CoveError:
            rec = state.load_record(cdir)
            if rec is None or rec.get("Id") != cid or \
                    rec["State"]["Status"] not in (*ACTIVE, "created") or \
                    time.monotonic() > deadline:
                return None
            time.sleep(0.02)


def log_since(tail: Any) -> bytes:
    """What a LogTail holds: the terminal's output as the log has it."""
    return b"".join(e["log"].encode("utf-8", "surrogateescape") for e in tail.read())


def window_size(fd: int) -> tuple[int, int] | None:
    import fcntl
    import termios
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, termios.TIOCGWINSZ, buf)
    except OSError:
        return None
    rows, cols = int.from_bytes(buf[0:2], "little"), int.from_bytes(buf[2:4], "little")
    return (rows, cols) if rows and cols else None


@contextlib.contextmanager
def raw(fd: int) -> Any:
    """Our terminal raw while we relay (nothing when `fd` is not a terminal)."""
    import termios
    import tty
    try:
        old = termios.tcgetattr(fd)
    except (termios.error, OSError):
        yield
        return
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Keys:
    """Our stdin into the container's terminal (when `forward`), watching for the
    detach keys."""

    def __init__(self, src: int, keys: bytes, forward: bool) -> None:
        self.src, self.keys, self.forward = src, keys, forward
        self.conn: Conn | None = None
        self.detached = threading.Event()

    def run(self) -> None:
        from cove.engine.detachkeys import Matcher
        keys = Matcher(self.keys)
        try:
            while data := os.read(self.src, 65536):
                out, detach = keys.feed(data)
                self._send(out)
                if detach:
                    self.detached.set()
                    if self.conn is not None:
                        with contextlib.suppress(OSError):
                            self.conn.sock.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            pass

    def _send(self, data: bytes) -> None:
        if self.forward and data and self.conn is not None:
            self.conn.input(data)


def relay(root: str, name: str, *, stdin: int | None, out: int, keys: bytes,
          tail: Any = None) -> int | None:
    """Relay the container's terminal until its run ends (None) or the detach keys are
    typed (0). With `tail` (a LogTail of its log, made before the caller started it) the
    output from its start: the monitor's, or the log's when the run was over before we
    could connect."""
    from_start = tail is not None
    paths = state.Paths(root)
    cdir = paths.cdir(name)
    rec: Mapping[str, Any] = state.load_record(cdir) or {}
    k = _Keys(stdin, keys, bool(rec.get("Config", {}).get("OpenStdin"))) \
        if stdin is not None else None
    first = connect(cdir, rec.get("Id"), from_start)
    if first is None:
        if tail is not None:
            _write_all(out, log_since(tail))
        return None
    conn = first
    got = False
    size = window_size(stdin if stdin is not None else out)
    if size is None and out != stdin:
        size = window_size(out)

    def winch(_s: int, _f: object) -> None:
        new = window_size(stdin if stdin is not None else out)
        if new is not None:
            conn.resize(*new)
    import signal
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGWINCH, winch) if main else None
    if size is not None:
        conn.resize(*size)
    try:
        with raw(stdin) if stdin is not None and k is not None and k.forward and \
                os.isatty(stdin) else contextlib.nullcontext():
            if k is not None:
                k.conn = conn
                threading.Thread(target=k.run, name=f"stdin {name}", daemon=True).start()
            while True:
                data = conn.recv()
                if k is not None and k.detached.is_set():
                    return 0
                if data:
                    _write_all(out, data)
                    got = True
                    continue
                if tail is not None and not got:  # over before the monitor sent a byte
                    _write_all(out, log_since(tail))
                    tail = None
                # the end: of the run, or of a killed monitor (the next one adopts it)
                conn.close()
                if not _still_running(cdir, rec.get("Id")):
                    return None
                try:
                    conn = Conn(cdir, False, timeout=10)
                except CoveError:
                    return None
                if k is not None:
                    k.conn = conn
    finally:
        conn.close()
        if main:
            signal.signal(signal.SIGWINCH, old)


def _still_running(cdir: str, cid: str | None, wait: float = 0.5) -> bool:
    """Whether the container (the same one) runs on: give its monitor a moment to
    record an exit that came with the end of the connection."""
    deadline = time.monotonic() + wait
    while True:
        rec = state.load_record(cdir)
        if rec is None or rec.get("Id") != cid:
            return False
        st = rec["State"]
        if st["Status"] not in ACTIVE:
            return False
        if not state.pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
            if time.monotonic() > deadline + 5:
                return False
        elif time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def exit_code(root: str, name: str) -> int:
    """The container's exit code once its exit is recorded (the code its last record
    had when it was removed meanwhile)."""
    from cove.engine.container.stop import wait
    cdir = state.Paths(root).cdir(name)
    last = state.load_record(cdir)
    try:
        return wait(root, name)
    except CoveError:
        return int(last["State"]["ExitCode"]) if last else 0


def run(root: str, o: Any) -> tuple[Record, int]:
    """`cove run -t` in the foreground: create, start under the monitor, relay its
    terminal from its start; its exit code (0 when detached: it runs on, and `--rm`
    removes it when it exits)."""
    from cove.engine.container.create import create
    from cove.engine.container.start import start
    from cove.engine.container.stop import remove
    from cove.engine.detachkeys import DEFAULT_DETACH_KEYS, parse_detach_keys
    keys = parse_detach_keys(getattr(o, "detach_keys", "") or DEFAULT_DETACH_KEYS)
    paths = state.Paths(root)
    rec = create(root, o)
    name = rec["Name"]
    cdir = paths.cdir(name)
    if o.interactive:
        state.update_record(cdir, lambda r: r["Config"].update({"OpenStdin": True}))
    from cove.engine import logs
    from cove.engine.logs import LogTail
    tail = LogTail(logs.log_path(cdir))  # (no log yet: from its start)
    try:
        rec = start(root, name)
        got = relay(root, name, stdin=0 if o.interactive else None, out=1, keys=keys,
                    tail=tail)
    except BaseException:
        cur = state.load_record(cdir)
        if cur is None or cur["State"]["Status"] not in ACTIVE:
            with contextlib.suppress(Exception):
                remove(root, name, force=True)
        raise
    finally:
        tail.close()
    if got is not None:  # detached: --rm now falls to the monitor, as docker's
        if o.rm:
            state.update_record(cdir, lambda r: r["HostConfig"].update({"AutoRemove": True}))
            cur = state.load_record(cdir)
            if cur is not None and cur["State"]["Status"] not in ACTIVE:
                with contextlib.suppress(CoveError):
                    remove(root, name, force=True)
        return rec, 0
    code = exit_code(root, name)
    if o.rm:
        with contextlib.suppress(CoveError):
            remove(root, name, force=True)
    return rec, code
