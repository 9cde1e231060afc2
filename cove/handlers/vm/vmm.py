"""The host side of one micro-VM: a small process holding qemu (its pid is the container's).

Forked by `create`, it starts qemu (which dies with it: PR_SET_PDEATHSIG), waits for the
guest agent's hello on the virtio-serial socket, sends the guest bundle, and reports
ready to `create` once the guest has created the container. Then, like runc's init, it
blocks on the exec fifo until `start`; it relays its stdio (inherited from `create`, as
conmon and containerd's shim expect) to and from the guest, forwards the signals it
gets, serves exec / ps clients on ctl.sock, and exits with the container's status
(killing itself with the same signal when the container was killed). With a terminal
it relays the host pty's slave instead of its stdio, as its session leader: SIGWINCH
(the engine resized the master) becomes a RESIZE frame (see cove.handlers.vm.console).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from cove.handlers.vm import proto

FORWARD = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGTERM, signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM)
PR_SET_PDEATHSIG = 1


class Booted(Exception):
    pass


def _pdeathsig() -> None:
    from cove.sys import libc

    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)  # a ^C to the runtime's group goes to the monitor, not to qemu


class Monitor:
    def __init__(self, statedir: str, qemu_cmd: list[str], guest: dict[str, Any],
                 boot_timeout: float, ready_w: int, tty: int = -1) -> None:
        self.dir = statedir
        self.tty = tty  # the host pty's slave: the container's stdio when it has a terminal
        self.tty_in = tty >= 0
        self.cmd = qemu_cmd
        self.guest = guest
        self.boot_timeout = boot_timeout
        self.ready_w = ready_w
        self.reader = proto.Reader()
        self.conn: socket.socket | None = None
        self.clients: dict[int, socket.socket] = {}  # chan -> ctl client
        self.creaders: dict[int, proto.Reader] = {}
        self.next_chan = 1
        self.started = False
        self.stdin_open = True
        self.qemu: subprocess.Popen[bytes] | None = None
        self.t0 = time.monotonic()

    # -- boot
    def boot(self) -> None:
        os.chdir(self.dir)  # socket paths stay short: relative to the state dir
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind("serial.sock")
        lsock.listen(1)
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.bind("ctl.sock")
        ctl.listen(8)
        self.ctl = ctl
        with open("console.log", "wb") as log:
            self.qemu = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_pdeathsig,
                                         close_fds=True)
        deadline = time.monotonic() + self.boot_timeout
        lsock.settimeout(10)
        try:
            self.conn, _ = lsock.accept()
        except OSError:
            raise Booted("qemu did not connect its virtio-serial port") from None
        finally:
            lsock.close()
            os.unlink("serial.sock")
        self.conn.setblocking(True)
        got = self.wait_frame(proto.HELLO, deadline, "the guest agent did not come up")
        del got
        self.trace("agent up")
        self.send(0, proto.CONFIG, json.dumps(self.guest).encode())
        ready = json.loads(self.wait_frame(proto.READY, deadline, "the guest did not create the "
                                                               "container"))
        self.trace("created in the guest")
        if "error" in ready:
            raise Booted(f"in the guest: {ready['error']}")

    def wait_frame(self, kind: int, deadline: float, why: str) -> bytes:
        assert self.conn is not None and self.qemu is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Booted(f"{why} within {self.boot_timeout:g}s (see {self.dir}/console.log)")
            if self.qemu.poll() is not None:
                raise Booted(f"qemu exited with status {self.qemu.returncode}: "
                             + _tail(os.path.join(self.dir, "console.log")))
            r, _, _ = select.select([self.conn], [], [], min(left, 0.2))
            if not r:
                continue
            data = self.conn.recv(65536)
            if not data:
                time.sleep(0.3)  # let the console log catch up
                raise Booted(f"{why}: the guest closed its port: "
                             + _tail(os.path.join(self.dir, "console.log")))
            for chan, k, payload in self.reader.feed(data):
                if k == kind and chan == 0:
                    return payload
                if k == proto.STDERR:
                    os.write(2, payload)

    def trace(self, what: str) -> None:
        if os.environ.get("COVE_VM_TRACE"):
            os.write(2, f"cove-vm: {time.monotonic() - self.t0:.2f}s {what}\n".encode())

    def send(self, chan: int, kind: int, data: bytes = b"") -> None:
        assert self.conn is not None
        self.conn.sendall(proto.pack(chan, kind, data))

    # -- after create
    def wait_start(self, wake_w: int) -> None:
        """In a thread: block on the exec fifo as runc's init does; then wake the loop."""
        try:
            fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC)
            os.write(fd, b"0")
            os.close(fd)
            os.write(wake_w, b"S")
        except OSError:
            pass

    def serve(self) -> None:
        assert self.conn is not None and self.qemu is not None
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for s in FORWARD:
            signal.signal(s, lambda *_: None)
        self.resize()  # the engine may have sized the master since create sent it
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        start_r, start_w = os.pipe2(os.O_CLOEXEC)
        threading.Thread(target=self.wait_start, args=(start_w,), daemon=True).start()
        qfd = os.pidfd_open(self.qemu.pid)
        while True:
            fds: list[int] = [self.conn.fileno(), wake_r, start_r, qfd, self.ctl.fileno()]
            fds += [c.fileno() for c in self.clients.values()]
            if self.started and self.tty_in:
                fds.append(self.tty)
            elif self.started and self.stdin_open and self.tty < 0:
                fds.append(0)
            ready, _, _ = select.select(fds, [], [])
            for fd in ready:
                if fd == self.conn.fileno():
                    data = self.conn.recv(65536)
                    if not data:
                        self.crashed("the guest closed its port")
                    for chan, kind, payload in self.reader.feed(data):
                        self.from_guest(chan, kind, payload)
                elif fd == wake_r:
                    self.signals(wake_r)
                elif fd == start_r:
                    os.read(start_r, 1)
                    self.started = True
                    self.trace("started")
                    self.send(0, proto.START)
                elif fd == qfd:
                    self.crashed(f"qemu exited (status {self.qemu.wait()})")
                elif fd == self.tty:
                    try:
                        data = os.read(self.tty, 65536)
                    except OSError:  # EIO: the engine closed the master (SIGHUP follows)
                        data = b""
                    if data:
                        self.send(0, proto.STDIN, data)
                    else:
                        self.tty_in = False
                elif fd == 0:
                    try:
                        data = os.read(0, 65536)
                    except OSError:
                        data = b""
                    self.send(0, proto.STDIN, data)
                    if not data:
                        self.stdin_open = False
                elif fd == self.ctl.fileno():
                    c, _ = self.ctl.accept()
                    chan = self.next_chan
                    self.next_chan += 1
                    self.clients[chan] = c
                    self.creaders[chan] = proto.Reader()
                else:
                    for chan, c in list(self.clients.items()):
                        if c.fileno() == fd:
                            self.from_client(chan, c)

    def signals(self, wake_r: int) -> None:
        try:
            got = os.read(wake_r, 512)
        except BlockingIOError:
            return
        for s in got:
            if s == signal.SIGWINCH and self.tty >= 0:
                self.resize()
            elif s in FORWARD:
                self.send(0, proto.SIGNAL, json.dumps({"signal": s}).encode())

    def resize(self) -> None:
        if self.tty < 0:
            return
        from cove.handlers.vm.console import winsize

        rows, cols = winsize(self.tty)
        if rows and cols:
            self.send(0, proto.RESIZE, json.dumps({"rows": rows, "cols": cols}).encode())

    def output(self, fd: int, data: bytes) -> None:
        if self.tty < 0:
            proto.write_all(fd, data)
            return
        try:
            proto.write_all(self.tty, data)
        except OSError:
            pass  # a hung-up terminal: the output has nowhere to go

    def from_client(self, chan: int, c: socket.socket) -> None:
        try:
            data = c.recv(65536)
        except OSError:
            data = b""
        if not data:
            c.close()
            del self.clients[chan]
            return
        for _, kind, payload in self.creaders[chan].feed(data):
            self.send(chan, kind, payload)

    def from_guest(self, chan: int, kind: int, payload: bytes) -> None:
        if chan == 0:
            if kind == proto.STDOUT:
                self.output(1, payload)
            elif kind == proto.STDERR:
                self.output(2, payload)
            elif kind == proto.ERROR:
                os.write(2, f"cove-runtime: vm: {json.loads(payload)['error']}\n".encode())
            elif kind == proto.EXIT:
                self.trace("exit")
                self.finish(json.loads(payload)["status"])
            return
        c = self.clients.get(chan)
        if c is not None:
            try:
                c.sendall(proto.pack(chan, kind, payload))
            except OSError:
                pass

    def stop_qemu(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()

    def crashed(self, why: str) -> None:
        os.write(2, f"cove-runtime: vm: {why}: "
                    f"{_tail(os.path.join(self.dir, 'console.log'))}\n".encode())
        self.stop_qemu()
        os._exit(255)

    def finish(self, status: int) -> None:
        self.stop_qemu()
        if os.environ.get("COVE_VM_TRACE"):
            self.trace(_tail("console.log", 2000))
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            signal.set_wakeup_fd(-1)
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)


def _tail(path: str, n: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return " | ".join(data[-n:].decode(errors="replace").replace("\r", "").split("\n")).strip()


def run(statedir: str, qemu_cmd: list[str], guest: dict[str, Any],
        boot_timeout: float, ready_w: int, tty: int = -1) -> None:
    """The monitor's body, in the process `create` forked; never returns."""
    if tty >= 0:
        from cove.handlers.vm.console import take_ctty

        os.setsid()
        take_ctty(tty)
        # As a runc init's: the terminal is the stdio. Keeping create's own (an engine
        # reads it to its end: containerd's shim) would hold that engine's create.
        for fd in (0, 1, 2):
            os.dup2(tty, fd)
    else:
        # containerd's shim gives a container without stdio (a CRI pod's sandbox) a
        # /dev/null opened read-only (go-runc's NullIO): runc's init never writes there,
        # the monitor does (the guest's output and errors), which would fail with EBADF.
        import fcntl

        for fd in (1, 2):
            try:
                if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                    nul = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(nul, fd)
                    os.close(nul)
            except OSError:
                pass
    m = Monitor(statedir, qemu_cmd, guest, boot_timeout, ready_w, tty)
    try:
        m.boot()
    except BaseException as e:
        msg = str(e) if isinstance(e, Booted) else f"monitor: {e!r}"
        failed = os.environ.get("COVE_VM_FAILED_CONSOLE")  # debugging: keep the console
        if failed:
            import shutil

            shutil.copy(os.path.join(statedir, "console.log"), failed)
        try:
            os.write(ready_w, f"error {msg}".encode())
        finally:
            m.stop_qemu()
            os._exit(1)
    assert m.qemu is not None
    os.write(ready_w, f"ok {m.qemu.pid}".encode())
    os.close(ready_w)
    try:
        m.serve()
    except BaseException as e:
        os.write(2, f"cove-runtime: vm monitor: {e!r}\n".encode())
    m.stop_qemu()
    os._exit(255)
