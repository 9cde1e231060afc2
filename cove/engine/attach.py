"""`cove attach` and `cove start -a [-i]`: a client joins a container's streams.

Output comes from the container's json-file log, from where it is when the client
joins (the monitor writes it; `start -a` joins before the start, so nothing is missed),
copied to our stdout and stderr until the container exits; the exit code is the
container's. Signals that would end the client go to the container instead (docker's
--sig-proxy, as an attached `run` does).

Input: a container started with `run -d -i` or `create -i` (docker's OpenStdin) holds
its stdin FIFO open itself (procs.open_stdin), so an attach opens the FIFO's write
end, copies our stdin into it and leaves: the container's stdin stays open for the
next one, as docker's does without StdinOnce. Our stdin is also where the detach keys
come from (docker's default Ctrl-P Ctrl-Q, `--detach-keys`): they end the attach and
leave the container running. When our stdin is a terminal it stays in line mode (it
is not the container's terminal: it has none), with flow control off so that Ctrl-Q
reaches us, and the last detach key made an end-of-line character, so that the
sequence arrives when it is typed rather than at the next Enter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from cove.engine import events, logs, state
from cove.engine.container import record, refresh, rtcmd, sigproxy
from cove.engine.container import start as cstart
from cove.engine.container import stop as cstop

# DEFAULT_DETACH_KEYS, parse_detach_keys, LogTail: re-exported (the API's attach
# modules import them from here)
from cove.engine.detachkeys import DEFAULT_DETACH_KEYS as DEFAULT_DETACH_KEYS
from cove.engine.detachkeys import Matcher
from cove.engine.detachkeys import parse_detach_keys as parse_detach_keys
from cove.engine.logs import LogTail as LogTail
from cove.engine.procs import STDIN_FIFO
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record


class _Input:
    """Copies our stdin into the container's stdin FIFO (when it has one), watching
    for the detach keys; sets `detached` when they are typed."""

    def __init__(self, src: int, fifo: int, keys: bytes) -> None:
        self.src, self.fifo, self.keys = src, fifo, keys
        self.detached = threading.Event()

    def _send(self, data: bytes) -> None:
        if self.fifo < 0 or not data:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fifo, view):]
        except OSError:  # the container closed its stdin, or exited
            os.close(self.fifo)
            self.fifo = -1

    def run(self) -> None:
        keys = Matcher(self.keys)
        try:
            while data := os.read(self.src, 65536):
                out, detach = keys.feed(data)
                self._send(out)
                if detach:
                    self.detached.set()
                    return
        except OSError:
            pass
        finally:
            if self.fifo >= 0:
                os.close(self.fifo)
                self.fifo = -1


@contextlib.contextmanager
def _terminal(fd: int, keys: bytes) -> Any:
    """Our stdin, when a terminal, in line mode without flow control (Ctrl-Q is a
    detach key) and with the last detach key as an end of line (delivered at once)."""
    import termios
    try:
        old = termios.tcgetattr(fd)
    except (termios.error, OSError):
        yield
        return
    new = [*old[:6], list(old[6])]
    new[0] &= ~(termios.IXON | termios.IXOFF)
    new[6][termios.VEOL] = keys[-1:]
    try:
        termios.tcsetattr(fd, termios.TCSANOW, new)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, old)


def _open_fifo(cdir: str) -> int:
    """The write end of a running container's stdin FIFO, or -1 when it has none
    open (not started with -i)."""
    try:
        fd = os.open(os.path.join(cdir, STDIN_FIFO), os.O_WRONLY | os.O_NONBLOCK |
                     os.O_CLOEXEC)
    except OSError:  # none, or nobody reads it (ENXIO)
        return -1
    os.set_blocking(fd, True)
    return fd


def attach(root: str, ref: str, *, stdin: int | None = 0, out: Any = None, err: Any = None,
           sig_proxy: bool = True, detach_keys: str = DEFAULT_DETACH_KEYS,
           start: bool = False) -> int:
    """Follow a container's output (and feed its stdin, with `stdin` an fd and a
    container that keeps one open) until it exits: its exit code. The detach keys
    typed on `stdin` end it early: 0, the container runs on. With `start`, the
    container is started once we follow its log (`cove start -a`)."""
    keys = parse_detach_keys(detach_keys)
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    cdir = paths.cdir(name)
    rec = refresh.refresh_record(paths, name)
    status = rec["State"]["Status"]
    if status == "paused" and not start:
        raise CoveError(f"attach {name}", "you cannot attach to a paused container, "
                                          "unpause it first")
    if status != "running" and not start:
        raise CoveError(f"attach {name}", "you cannot attach to a stopped container, "
                                          "start it first")
    if start and status == "paused":
        raise CoveError(f"container {name}", "cannot start a paused container, try "
                                             "unpause instead")
    if rec["Config"].get("Tty"):  # its terminal, relayed (cove/engine/ttyattach.py)
        from cove.engine import ttyattach
        events.emit(root, "container", "attach", rec)
        tail = LogTail(logs.log_path(cdir)) if start and status != "running" else None
        try:
            if tail is not None:
                cstart.start(root, name)
            if ttyattach.relay(root, name, stdin=stdin, keys=keys, tail=tail,
                               out=1 if out is None else out.fileno()) is not None:
                return 0  # detached
        finally:
            if tail is not None:
                tail.close()
        return ttyattach.exit_code(root, name)
    tail = LogTail(logs.log_path(cdir))
    events.emit(root, "container", "attach", rec)
    try:
        if start and status != "running":
            cstart.start(root, name)
        return _follow(paths, name, tail, stdin, out or sys.stdout, err or sys.stderr,
                       sig_proxy, keys)
    finally:
        tail.close()


def _follow(paths: state.Paths, name: str, tail: LogTail, stdin: int | None, out: Any,
            err: Any, sig_proxy: bool, keys: bytes) -> int:
    cdir = paths.cdir(name)
    inp: _Input | None = None
    if stdin is not None:
        now: Mapping[str, Any] = state.load_record(cdir) or {}
        fifo = _open_fifo(cdir) if now.get("Config", {}).get("OpenStdin") else -1
        inp = _Input(stdin, fifo, keys)
        threading.Thread(target=inp.run, name=f"stdin {name}", daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        rtcmd.rt_quiet(paths, "kill", name, str(signum))

    last: list[Record] = []

    def alive() -> bool:
        rec = state.load_record(cdir)
        if rec is not None:
            last[:] = [rec]
        return rec is not None and (rec["State"]["Status"] in record.ACTIVE
                                    or refresh.monitor_alive(rec))

    def copy() -> None:
        for e in tail.read():
            stream = err if e["stream"] == "stderr" else out
            stream.write(e["log"])
            stream.flush()
    ctx = _terminal(stdin, keys) if stdin is not None and os.isatty(stdin) \
        else contextlib.nullcontext()
    with ctx, sigproxy.signals(forward if sig_proxy else None):
        nap = 0.01
        while True:
            copy()
            if inp is not None and inp.detached.is_set():
                return 0
            if not alive():
                copy()
                break
            time.sleep(nap)
            nap = min(nap * 1.5, 0.05)
    try:
        return cstop.wait(paths.root, name)
    except CoveError:  # removed as it exited (--rm): the code its last record had
        return int(last[0]["State"]["ExitCode"]) if last else 0
