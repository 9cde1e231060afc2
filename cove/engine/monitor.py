"""The monitor (`cove-monitor`, conmon's role): one process for every running container
of a state root.

One event loop (epoll) over: the listening socket `<root>/monitor.sock` (requests to
start or adopt a container), every container's stdout and stderr FIFOs (copied into its
json-file log), a pidfd per container init (its exit), a pidfd per step child, and the
keeper. The blocking steps of a run — `cove-runtime create`/`start`, and `delete` with
the teardown after an exit — run in children it forks (cove/engine/steps.py), so a slow
start (a vm handler boots a guest) holds up no other container's output. Those children
are not subreapers: the init a runtime leaves behind is reparented to the monitor, a
child subreaper, so it reaps every init it started and writes its `exit.code`.

The keeper (cove/engine/zygote.py, `cove-zygote`) is the monitor's parent and holds a
copy of everything the monitor holds for a container — the FIFOs' read ends and the
init's pidfd, sent over a socket pair with SCM_RIGHTS — so that SIGKILL of the monitor
loses nothing: the inits become the keeper's children (it reaps them and writes their
exit codes), the pipes keep their contents, and the keeper forks a new monitor at once,
which adopts every running container (re-opening the FIFOs, a pidfd per init). SIGKILL
of the keeper loses nothing either: the monitor starts a new one (a sibling now, which
reads an exit status through its pidfds) and sends it what it holds. See docs/engine.md.
A container with a terminal: its pty master instead of its stdout, and an attach
socket (cove/engine/ttywatch.py).

The monitor imports only os, select, socket, mmap, `_signal`, cove/sys/libc (ctypes,
for tee(2)) and the engine's state, log, log-copy, event and process modules: what it
imports it keeps for as long as containers run.

    (forked by the keeper) monitor.serve(ROOT, KEEPER_SOCK_FD, READY_FD)
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (6 ms, memory)
import os
import socket
import sys
import time

from cove.engine import logcopy, policy, procs, state, steps, ttywatch
from cove.engine.monwatch import Watch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from cove.engine.container.record import Record

COMM = "cove-monitor"
EPOLLHUP = 0x10
SOCK, PID_FILE, LOCK = "monitor.sock", "monitor.pid", "monitor.lock"
IDLE = 120.0  # seconds with nothing to watch before the monitor (and keeper) leave
DRAIN = 2.0  # seconds to wait for the FIFOs' EOF after an init exits
LOST = 3.0  # seconds to wait for the keeper's exit.code of an adopted init


class Answered(Exception):
    """The step child answers the client; the monitor must not."""


class Monitor(procs.Loop):
    def __init__(self, root: str, keeper: socket.socket | None,
                 ttys: dict[str, int] | None = None) -> None:
        self.root = root
        self.ttys = ttys or {}  # pty masters the keeper kept for us, by container
        self.paths = state.Paths(root)
        self.keeper = keeper
        self.keeper_fd = -1  # a pidfd of the keeper
        self.keeper_pid = 0
        super().__init__()
        self.watches: dict[str, Watch] = {}
        self.scratch = logcopy.Scratch()
        self.jobs = 0
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.stopping = False
        self.env = dict(os.environ)
        self.lock = -1  # our flock: must not live on in the step children
        self.preloaded = False
        self.net_loaded = False
        self.policy = policy.Policy(root, self.later, self.fork,
                                    lambda name: name in self.watches)

    # -- plumbing -------------------------------------------------------------------------

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, fn))

    def fork(self, what: Callable[[], int], then: Callable[[int], None]) -> None:
        """Run `what` in a child; `then(exit status)` when it ends."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(s, signal.SIG_DFL)
                self.ep.close()
                os.close(self.lock)
                code = what()
            except BaseException as e:
                print(f"{COMM}: {e}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        self.jobs += 1
        fd = procs.pidfd(pid)

        def ended(_fd: int) -> None:
            if fd >= 0:
                self.off(fd, close=True)
            self.jobs -= 1
            status = procs.child_status(pid)
            then(os.waitstatus_to_exitcode(status) if status is not None else 1)
        if fd < 0:
            ended(-1)
        else:
            self.on(fd, ended)

    def tell_keeper(self, *parts: str, fds: list[int] | None = None) -> None:
        if self.keeper is None:
            return
        try:
            socket.send_fds(self.keeper, ["\0".join(parts).encode("utf-8", "surrogateescape")],
                            fds or [])
        except OSError:
            pass  # gone: restarted when its pidfd says so

    # -- requests -------------------------------------------------------------------------

    def accept(self, fd: int) -> None:
        conn, _ = self.listener.accept()
        with conn:
            try:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 18, 1, socket.MSG_CMSG_CLOEXEC)
            except OSError:
                return
            op, name, *env = msg.decode("utf-8", "surrogateescape").split("\0")
            sync = fds[0] if fds else -1
            try:
                conn.send(b"ok")
            except OSError:
                pass
        if sync < 0:
            return
        try:
            if op == "start":
                self.start(name, dict(kv.split("=", 1) for kv in env if "=" in kv), sync)
            elif op == "adopt":
                self.adopt(name)
            elif op == "reconcile":  # a project's desired state changed (services/)
                self.policy.services_kick(name)
            os.write(sync, b"ok\n")
        except Answered:
            pass
        except Exception as e:
            try:
                os.write(sync, f"error: {e}\n".encode())
            except OSError:
                pass
        finally:
            os.close(sync)

    def start(self, name: str, env: dict[str, str], sync: int) -> None:
        """Fork the child that creates and starts it (and answers on `sync`); watch it
        once it runs. The caller closes our copy of `sync`."""
        old = self.watches.get(name)
        if old is not None and old.code is None:
            return  # it runs: "ok"
        rec = state.load_record(self.paths.cdir(name))
        if rec is None:
            raise RuntimeError("no such container")
        if not self.preloaded and steps.in_process(env):
            steps.preload()  # once, here: every step child shares it
            self.preloaded = True
        self.net_loaded = self.net_loaded or steps.preload_network(rec)
        w = Watch(self.paths, name, rec, self.scratch)
        w.open_fifos(create=True)
        rfds = list(w.rfds)
        me = os.getpid()
        keeper = self.keeper_pid
        ours = theirs = None
        if rec.get("Config", {}).get("Tty"):  # the step child sends the pty master
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

        def child() -> int:
            os.environ.clear()
            os.environ.update(env)
            return steps.start(self.root, name, env, rfds, sync, me, keeper,
                               theirs.fileno() if theirs else -1)

        def dropped() -> None:
            for fd in w.rfds:
                os.close(fd)
            w.copier.close()
            if w.tty is not None:
                w.tty.close()

        def started(rc: int) -> None:
            rec: Mapping[str, Any] = state.load_record(w.cdir) or {}
            st = rec.get("State") or {}
            master = ttywatch.recv_master(ours) if ours is not None else -1
            if rc != 0 or st.get("Status") != "running" or (ours and master < 0):
                if master >= 0:
                    os.close(master)
                dropped()
                return
            w.pid, w.start, w.parent = int(st.get("Pid") or 0), st.get("PidStart"), True
            if master >= 0:
                self.use_tty(w, master)
            self.watch(w)
            self.policy.running(name, rec)
        try:
            if ours is not None:  # attach.sock before "ok": a client may come at once
                w.tty = ttywatch.Tty(self, self.later, w.cdir, name)
            self.fork(child, started)
        except BaseException:
            dropped()
            raise
        finally:
            if theirs is not None:
                theirs.close()
        raise Answered

    def use_tty(self, w: Watch, master: int) -> None:
        """The container's terminal: its output into stdout.fifo (and so the log), its
        attach socket served (cove/engine/ttywatch.py)."""
        assert w.tty is not None
        out = next(fd for fd, stream in w.rfds.items() if stream == "stdout")
        w.tty.pump = lambda: self.read(w, out)
        w.tty.hangup = lambda: self.tty_hangup(w, out)
        w.tty.use(master, out)

    def tty_hangup(self, w: Watch, out: int) -> None:
        """No process holds the terminal any more: what it wrote is all in the FIFO."""
        if self.watches.get(w.name) is not w or out not in w.rfds:
            return
        w.copier.pump(out, w.rfds.pop(out), last=True, rounds=64)
        self.off(out, close=True)
        if w.code is not None and not w.rfds:
            self.finish(w)

    def adopt(self, name: str) -> None:
        """Watch a running container no monitor watches (its monitor was killed): its
        FIFOs re-opened (the keeper kept their contents), a pidfd for its init."""
        if name in self.watches:
            return
        cdir = self.paths.cdir(name)
        rec = state.load_record(cdir)
        if rec is None:
            return
        st = rec.get("State") or {}
        if st.get("Status") not in ("running", "paused"):
            return
        w = Watch(self.paths, name, rec, self.scratch)
        try:
            w.open_fifos(create=False)
        except OSError:
            pass
        w.pid, w.start = int(st.get("Pid") or 0), st.get("PidStart")
        if rec["Config"].get("Tty"):
            master = self.ttys.pop(name, -1)
            w.tty = ttywatch.Tty(self, self.later, w.cdir, name)
            if master >= 0 and any(s == "stdout" for s in w.rfds.values()):
                self.use_tty(w, master)
            else:
                print(f"{COMM}: adopt {name}: its terminal was lost with its monitor and "
                      "keeper", file=sys.stderr, flush=True)
        me = os.getpid()

        def mine(r: Record) -> None:
            if int(r["State"].get("Pid") or 0) == w.pid:
                r["MonitorPid"] = me
        state.update_record(cdir, mine)
        self.net_loaded = self.net_loaded or steps.preload_network(rec)
        self.watch(w)
        self.policy.running(name, rec)

    # -- watching -------------------------------------------------------------------------

    def watch(self, w: Watch) -> None:
        self.watches[w.name] = w
        for fd in w.rfds:
            self.on(fd, lambda fd, w=w: self.read(w, fd, self.mask & EPOLLHUP),  # type: ignore[misc]
                    edge=True)
        w.pidfd = procs.pidfd(w.pid) if w.parent or state.pid_alive(w.pid, w.start) else -1
        self.tell_keeper("watch", w.name, str(w.pid), str(w.start or 0),
                         "tty" if w.tty and w.tty.fds() else "", fds=w.fds())
        if w.pidfd >= 0:
            self.on(w.pidfd, lambda _fd, w=w: self.init_exited(w))  # type: ignore[misc]
        else:
            self.init_exited(w)

    def read(self, w: Watch, fd: int, hup: int = 0) -> None:
        """Copy what FIFO `fd` holds into the log (exactly once: cove/engine/logcopy.py);
        at its end, stop watching it."""
        if self.watches.get(w.name) is not w or fd not in w.rfds:
            return  # a later() for a FIFO finished meanwhile
        if hup:
            w.hup.add(fd)
        done = w.copier.pump(fd, w.rfds[fd], fd in w.hup)
        if done is None:  # more than a turn's worth: the others' turn first
            self.later(0.0, lambda: self.read(w, fd))
            return
        if not done:
            return
        del w.rfds[fd]
        self.off(fd, close=True)
        if w.code is not None and not w.rfds:
            self.finish(w)

    def init_exited(self, w: Watch) -> None:
        if w.pidfd >= 0:
            self.off(w.pidfd)
        status = procs.child_status(w.pid, block=False) if w.parent else None
        if status is None:
            status = procs.exit_status(w.pidfd, w.pid, w.start)
        if status is not None:
            w.code = procs.shell_code(status)
            state.write_atomic(os.path.join(w.cdir, procs.EXIT_FILE),
                               f"{w.code} {w.pid}\n".encode())
        else:
            # reaped by the keeper while no monitor ran (it writes exit.code), or lost
            w.code = procs.read_exit(w.cdir, w.pid)
            if w.code is None:
                if not w.exited:
                    w.exited = time.monotonic()
                if time.monotonic() - w.exited < LOST:
                    self.later(0.05, lambda: self.init_exited(w))
                    return
                w.code = 255
                w.error = "exit code lost: its monitor and keeper were killed"
        if w.pidfd >= 0:
            os.close(w.pidfd)
            w.pidfd = -1
        w.finished = state.now_rfc3339()
        if not w.rfds:
            self.finish(w)
        else:
            self.later(DRAIN, lambda: self.finish(w))

    def finish(self, w: Watch) -> None:
        if self.watches.get(w.name) is not w:
            return  # finished already
        for fd in list(w.rfds):
            w.copier.pump(fd, w.rfds.pop(fd), last=True, rounds=64)
            self.off(fd, close=True)
        w.copier.close()
        if w.tty is not None:
            w.tty.close()  # attached clients see the end
        del self.watches[w.name]
        self.tell_keeper("done", w.name)
        code, error, finished, pid, env = w.code or 0, w.error, w.finished, w.pid, self.env

        def child() -> int:
            steps.finish(self.root, w.name, code, error, finished, pid, env)
            return 0
        name = w.name
        self.fork(child, lambda _rc: self.policy.exited(name))

    # -- the keeper -----------------------------------------------------------------------

    def keeper_gone(self, _fd: int) -> None:
        """The keeper died: start a new one (a sibling, with a pidfd on us) and give it
        what it held."""
        self.off(self.keeper_fd, close=True)
        self.keeper_fd, self.keeper_pid = -1, 0
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None
        if self.stopping:
            return
        from cove.engine import spawn
        try:
            ours, pid = spawn.keeper_sibling(self.root, self.env)
        except OSError as e:
            print(f"{COMM}: cannot start a keeper: {e}", file=sys.stderr, flush=True)
            return
        self.keeper = ours
        self.keeper_pid = pid
        self.keeper_fd = procs.pidfd(pid)
        if self.keeper_fd >= 0:
            self.on(self.keeper_fd, self.keeper_gone)
        for w in self.watches.values():
            self.tell_keeper("watch", w.name, str(w.pid), str(w.start or 0),
                             "tty" if w.tty and w.tty.fds() else "", fds=w.fds())

    # -- the loop -------------------------------------------------------------------------

    def run(self, ready: int) -> int:
        path = os.path.join(self.root, SOCK)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o077)
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self.listener.bind(path)
        except OSError as e:
            print(f"cannot listen on {path}: {e.strerror}", file=sys.stderr, flush=True)
            return 1
        finally:
            os.umask(old)
        self.listener.listen(128)
        state.write_atomic(os.path.join(self.root, PID_FILE), f"{os.getpid()}\n".encode())
        self.on(self.listener.fileno(), self.accept)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(s, lambda _s, _f: None)
        self.on(wake_r, self.woken)
        if self.keeper is not None:
            kpid = os.getppid()
            if procs.comm(kpid) == "cove-zygote":
                self.keeper_pid = kpid
                self.keeper_fd = procs.pidfd(kpid)
            if self.keeper_fd >= 0:
                self.on(self.keeper_fd, self.keeper_gone)
        for name in state.all_names(self.paths):
            # what a killed monitor watched, and restarts that were due meanwhile
            try:
                self.adopt(name)
                if name not in self.watches:
                    self.policy.exited(name)
            except Exception as e:
                print(f"{COMM}: adopt {name}: {e}", file=sys.stderr, flush=True)
        for fd in self.ttys.values():  # of containers that ended meanwhile
            os.close(fd)
        self.ttys.clear()
        if ready >= 0:
            try:
                os.write(ready, b"ok\n")
                os.close(ready)
            except OSError:
                pass
        idle = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            due = [t for t in self.timers if t[0] <= now]
            if due:
                self.timers = [t for t in self.timers if t[0] > now]
                for _, timer in due:
                    timer()
                continue
            wait = min((t[0] for t in self.timers), default=now + 1.0) - now
            try:
                events = self.ep.poll(max(0.0, min(wait, 1.0)))
            except InterruptedError:  # pragma: no cover
                continue
            self.dispatch(events, COMM)
            if self.watches or self.jobs or self.timers or events:
                idle = time.monotonic()
            elif time.monotonic() - idle >= IDLE or not os.path.exists(path):
                break
        for f in (PID_FILE, SOCK):
            try:
                if f != SOCK or os.path.exists(path):
                    os.unlink(os.path.join(self.root, f))
            except OSError:
                pass
        return 0

    def woken(self, fd: int) -> None:
        try:
            got = os.read(fd, 512)
        except BlockingIOError:
            got = b""
        if signal.SIGTERM in got:
            self.stopping = True
        procs.reap_others()


def serve(root: str, keeper: int, ready: int, ttys: dict[str, int] | None = None) -> int:
    """The monitor's life: forked by the keeper, with its end of their socket pair (and
    the pty masters it kept, by container)."""
    import fcntl
    import resource

    procs.set_comm(COMM)
    for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    # three fds a container here (two FIFOs and a pidfd) and one for its log
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lock = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a killed one's lock goes with it
    procs.subreaper()
    sock = socket.socket(fileno=keeper) if keeper >= 0 else None
    m = Monitor(root, sock, ttys)
    m.lock = lock
    return m.run(ready)


def main(argv: list[str]) -> int:  # pragma: no cover - for a monitor exec'ed by hand
    return serve(argv[0], -1, int(argv[1]) if len(argv) > 1 else -1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
