"""The monitor's side of a container with a terminal (`run -t`, docker's Tty): its pty
master, its log and its attach socket (cove/engine/monitor.py calls these).

The runtime's console socket hands the pty master to the step child that creates the
container (cove/engine/steps.py), which passes it to the monitor. From then on:

- **Output** is read from the master and written at once into the container's
  `stdout.fifo`, which the monitor and the keeper hold, and copied from there into the
  json-file log by the same exactly-once copier as a container without a terminal
  (cove/engine/logcopy.py), as stream "stdout", raw (docker logs a tty's `\\r\\n` as
  it is). What the container writes while no monitor runs waits in the pty (its
  buffer full, the writer blocks: nothing is dropped), and what is in the FIFO waits
  there. The one window: a monitor SIGKILLed between that read and that write (two
  system calls in a row) loses what the read took. splice(2) from the master into the
  FIFO would close it, but each splice is a pipe buffer of its own, never merged: a
  line typed a key at a time fills the 16 buffers tee(2) can peek (and then the 256 of
  the FIFO) before its newline, and the log copy would stall on it.
- **The keeper holds a copy of the master** (sent with the FIFOs, SCM_RIGHTS): the last
  close of a master hangs its terminal up (SIGHUP to the container's session), so a
  killed monitor must not be its last holder. The keeper forks the next monitor with
  its copies open (zygote.fork_monitor), and that monitor adopts the terminal.
- **Attach** (conmon's attach socket): `<container>/attach.sock`, SOCK_SEQPACKET. A
  client's messages are `i` + input (written to the master), `r` + rows and columns
  (two little-endian u16: TIOCSWINSZ on the master, so the container gets SIGWINCH) and
  `s` or `n` first: whether to send the output since the start first (a client that
  attached before the start, as `run -it` and docker's create/attach/start do, misses
  no prompt) or only what came after its connect. Each message the monitor sends is
  output. The monitor closes every attached connection when the
  container's run ends (and a killed monitor's close when it dies: the client looks at
  the container and connects again to the next monitor). Detach keys are the
  client's: it stops sending and leaves.

Memory: per container the master, the FIFO's write end, the listening socket, the
attached connections, and the output of its first 10 seconds (at most 64 KiB) for `s`.
"""

from __future__ import annotations

import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cove.engine import procs

ATTACH_SOCK = "attach.sock"
PEEK = 1 << 16  # the log copy's peek: what the FIFO holds is kept below it
HEAD = 1 << 16  # output kept for `s` clients
HEAD_FOR = 10.0  # seconds after the start that it is kept
OUTBOX = 1 << 20  # output queued for a slow client before it is dropped
FIONREAD = 0x541B


def at(cdir: str, name: str, fn: Callable[[str], object]) -> None:
    """`fn(path)` for `<cdir>/<name>` through /proc/self/fd: a socket's path may not be
    longer than 107 bytes, and a state root in a test's temp dir gets there."""
    fd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fn(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def _fill(fd: int) -> int:
    """Bytes waiting in pipe `fd`."""
    import fcntl
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, FIONREAD, buf)
    except OSError:
        return 0
    return int.from_bytes(buf, "little")


class Client:
    __slots__ = ("deaf", "early", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deaf = False  # it can't take output any more (it will read EOF soon)
        self.out: list[bytes] = []
        # output from its connect to its first message (`s` or `n`), which says whether
        # it wants the output since the start (which holds this) or only this
        self.early: bytearray | None = bytearray()


class Tty:
    """One container's terminal, as the monitor holds it."""

    def __init__(self, loop: procs.Loop, later: Callable[[float, Callable[[], None]], None],
                 cdir: str, name: str) -> None:
        self.loop, self.later, self.cdir, self.name = loop, later, cdir, name
        self.master = -1
        self.fifo_r = self.fifo_w = -1  # stdout.fifo: the read end is the Watch's
        self.pump: Callable[[], None] = lambda: None  # the log copy (the monitor's read)
        self.hangup: Callable[[], None] = lambda: None  # the terminal's end
        self.clients: dict[int, Client] = {}
        self.head: bytearray | None = bytearray()
        self.input = b""  # for the master, when it would block (or is not here yet)
        self.size = b""  # the last size asked for (before the master came: set then)
        self.closed = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET |
                                      socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

        def bind(path: str) -> None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            old = os.umask(0o077)
            try:
                self.listener.bind(path)
            finally:
                os.umask(old)
        try:
            at(cdir, ATTACH_SOCK, bind)
            self.listener.listen(16)
        except OSError:
            self.listener.close()
            raise
        loop.on(self.listener.fileno(), self.accept)
        later(HEAD_FOR, self.drop_head)

    def drop_head(self) -> None:
        self.head = None

    def use(self, master: int, fifo_r: int) -> None:
        """Start copying: `master` the pty's master, `fifo_r` the read end of the
        container's stdout.fifo (the log copy's source)."""
        self.master, self.fifo_r = master, fifo_r
        os.set_blocking(master, False)
        at(self.cdir, "stdout.fifo", lambda p: setattr(
            self, "fifo_w", os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)))
        self.loop.on(master, self.readable)
        # what clients sent between the "ok" to the start and now
        if self.size:
            self._resize()
        self._write()

    # -- output -----------------------------------------------------------------------

    def readable(self, _fd: int = -1) -> None:
        """Move what the terminal holds into the FIFO (a read and a write), send it to
        the attached clients, and have the log copy take it."""
        if self.master < 0 or self.fifo_w < 0:
            return
        fill = _fill(self.fifo_r)
        if fill > PEEK // 2:
            self.pump()  # whole lines leave the pipe; a partial one stays (< 16 KiB)
            fill = _fill(self.fifo_r)
        room = PEEK - fill
        if room <= 0:  # the log copy is stuck: try again shortly, not in a busy loop
            self.loop.off(self.master)
            self.later(0.05, lambda: self.loop.on(self.master, self.readable)
                       if self.master >= 0 else None)
            return
        try:
            data = os.read(self.master, room)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the terminal any more
            data = b""
        if not data:
            self.loop.off(self.master)
            self.hangup()
            return
        try:
            os.write(self.fifo_w, data)  # (room for it: at most PEEK of its 1 MiB used)
        except OSError as e:
            import sys
            print(f"cove-monitor: {self.name}: terminal output lost: {e}", file=sys.stderr,
                  flush=True)
        self.pump()  # the log first: a client that saw a line finds it in `logs`
        if self.head is not None:
            if len(self.head) + len(data) > HEAD:
                self.head = None
            else:
                self.head += data
        for c in list(self.clients.values()):
            if c.early is None:
                self._send(c, data)
            elif len(c.early) + len(data) <= OUTBOX:
                c.early += data

    def _send(self, c: Client, data: bytes) -> None:
        if c.deaf:
            return
        if c.out:
            c.out.append(data)
            if sum(map(len, c.out)) > OUTBOX:
                self.drop(c)  # too slow: it sees EOF, and may come back
            return
        for i in range(0, len(data), PEEK):
            try:
                c.sock.send(data[i:i + PEEK])
            except BlockingIOError:
                c.out.append(data[i:])
                self.later(0.01, lambda: self._flush(c))
                return
            except OSError:  # it has closed its side: its last messages are still
                c.deaf = True  # to be read (a resize-only client sends one and leaves)
                return

    def _flush(self, c: Client) -> None:
        if c.sock.fileno() not in self.clients:
            return
        out, c.out = b"".join(c.out), []
        self._send(c, out)

    # -- clients ----------------------------------------------------------------------

    def accept(self, _fd: int) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setblocking(False)
            c = Client(conn)
            self.clients[conn.fileno()] = c
            self.loop.on(conn.fileno(), lambda _fd, c=c: self.message(c))  # type: ignore[misc]

    def drop(self, c: Client) -> None:
        fd = c.sock.fileno()
        if self.clients.pop(fd, None) is not None:
            self.loop.off(fd)
            c.sock.close()

    def message(self, c: Client) -> None:
        try:
            msg = c.sock.recv(PEEK)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if not msg:
            self.drop(c)
            return
        kind, body = msg[:1], msg[1:]
        if c.early is not None:  # its first message
            early, c.early = bytes(c.early), None
            if kind == b"s" and self.head is not None:
                early = bytes(self.head)  # (what came meanwhile is in it)
            if early:
                self._send(c, early)
        if kind == b"i" and not self.closed:
            self.input += body
            self._write()
        elif kind == b"r" and len(body) == 4:
            self.size = body
            self._resize()

    def _resize(self) -> None:
        if self.master < 0:
            return
        import fcntl
        import termios
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, self.size + bytes(4))
        except OSError:
            pass

    def _write(self) -> None:
        """Client input into the terminal; what would block waits (a container that
        reads no input fills the terminal's buffer: more is dropped past 1 MiB)."""
        if self.master < 0:
            if self.closed or len(self.input) > OUTBOX:
                self.input = b""
            return
        while self.input:
            try:
                n = os.write(self.master, self.input[:4096])
            except BlockingIOError:
                if len(self.input) > OUTBOX:
                    self.input = b""
                else:
                    self.later(0.02, self._write)
                return
            except OSError:
                self.input = b""
                return
            self.input = self.input[n:]

    # -- the end ----------------------------------------------------------------------

    def fds(self) -> list[int]:
        """What the keeper holds for us: the master."""
        return [self.master] if self.master >= 0 else []

    def close(self) -> None:
        """The run ended: every client sees EOF; the socket, master and FIFO end go."""
        if self.closed:
            return
        self.closed = True
        for c in list(self.clients.values()):
            self.drop(c)
        self.loop.off(self.listener.fileno())
        self.listener.close()
        try:
            at(self.cdir, ATTACH_SOCK, _unlink)
        except OSError:
            pass  # removed with its container
        for fd in (self.master, self.fifo_w):
            if fd >= 0:
                self.loop.off(fd)
                os.close(fd)
        self.master = self.fifo_w = -1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def recv_master(sock: socket.socket) -> int:
    """The pty master a step child sent over `sock` (closed here), or -1."""
    try:
        sock.setblocking(False)
        _msg, fds, _f, _a = socket.recv_fds(sock, 16, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        fds = []
    finally:
        sock.close()
    return fds[0] if fds else -1
