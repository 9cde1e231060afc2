"""`cove run`'s warm server: a process per state root that has imported the CLI and the
engine once, and forks a worker per `cove run` that does the whole command there.

Why: of a `cove run --rm busybox true` of ~165 ms, ~55 ms went before the engine did
anything: the interpreter, ~35 ms of imports (argparse, typing, the engine, the image
store) and ~11 ms building run's argparse parser. The client (cove/cli/runclient.py) is
what `cove run` runs first (cove/cli/main.py): with only os, sys, _socket and _signal
imported it sends its command line, environment, umask, working directory and fds 0-2
to `<root>/run.sock`;
the server forks a worker which takes them on as its own and runs the very same
`cove.cli.main.main(argv)` with the parser built in advance, while the client relays the
signals meant for it (^C, a kill: docker's --sig-proxy, as the CLI would handle them)
and finally exits with the worker's status (or dies of the signal that killed it).

What the worker can't be is refused up front, and the client then runs the command
itself, as before: another user, another mount/network/pid/user/ipc/uts/cgroup namespace,
root directory, interpreter or Cove tree than the server's (a test's private netns), `-t`
(a terminal wants its foreground process group), `-i` (stdin), COVE_RUN_SERVER=0. A
server that is not running is started after a run made without it (the run itself never
waits for it); it leaves after IDLE seconds without a request, when the root's monitor
is gone (`cove supervisor stop`, a test's end: cove/engine/monctl.py stops it too) or
when its socket is removed.

    (started by the client) python -I -S -c BOOT PATH ROOT
"""

from __future__ import annotations

import os
import sys

from cove.cli import runclient
from cove.cli.runclient import LOCK, PID_FILE, PROXIED, SOCK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import socket

IDLE = 30.0
_NET = [False]  # whether the bridge networks' modules are loaded here


def _warm() -> argparse.ArgumentParser:
    """Import what a run imports (the list: the modules a worker still read from disk,
    seen with strace), and build run's parser, once."""
    import importlib

    from cove.cli import main as climain
    for m in ("resource", "cove.engine.containers", "cove.engine.hostspec", "cove.engine.images",
              "cove.engine.monctl", "cove.engine.netcontainer", "cove.engine.systemd",
              "cove.engine.volumes", "cove.image.builtin", "cove.image.bundle",
              "cove.image.snapshots", "cove.image.store", "cove.oci.defaults",
              "cove.oci.seccomp_default", "cove.runtime.cgroups",
              "cove.sys.caps", "cove.sys.inotify"):
        importlib.import_module(m)
    return climain.parser(["run", "x"])


def _bridged(argv: list[str]) -> bool:
    """Whether a run's command line asks for a bridge network (the default one or a
    user's): its `--network`/`--net` is not none, host or container:NAME. A look at the
    flags before the image's name only; a rare miss costs only the warm import."""
    net = ""
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--network", "--net"):
            net = argv[i + 1]
        elif arg.startswith(("--network=", "--net=")):
            net = arg.partition("=")[2]
    return net not in ("none", "host") and not net.startswith("container:")


def _warm_network() -> bool:
    """In the server, after the first run on a bridge network: import what attaching
    one imports (the engine's network modules; raw rtnetlink, not pyroute2, which only
    creating a bridge needs), so that the next runs' workers have it. Not before: a
    root whose runs are all `--network none` never pays the memory."""
    import importlib
    for m in ("ipaddress", "cove.engine.bridge", "cove.engine.network", "cove.engine.rtnl"):
        importlib.import_module(m)
    return True


def _worker(conn: socket.socket, fds: list[int], mask: int, argv: list[str],
            env: dict[str, str], parser: argparse.ArgumentParser) -> int:
    """In the forked worker: become the client (fds 0-2, cwd, umask, environment), parse;
    "f" for what we don't run, else run it as `cove` would. Its exit status."""
    import io
    import signal
    import threading
    runclient.SERVED = True
    for i in range(3):
        os.dup2(fds[i], i)
    os.fchdir(fds[3])
    for fd in fds:
        os.close(fd)
    os.umask(mask)
    os.environ.clear()
    os.environ.update(env)
    for n in PROXIED:
        signal.signal(n, signal.default_int_handler if n == signal.SIGINT else signal.SIG_DFL)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                  line_buffering=os.isatty(1), errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                  errors="backslashreplace")
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    from cove.cli import main as climain
    try:
        i = argv.index("run")
        a = parser.parse_args(argv)
    except SystemExit as e:  # a bad flag (125) or --help (0), said as the CLI says it
        sys.stdout.flush()
        return int(e.code or 0)
    if a.tty or a.interactive:
        conn.send(b"f")
        return -1
    conn.send(b"r")

    def relay() -> None:  # the signals meant for the client, as if they were ours
        while True:
            try:
                got = conn.recv(64)
            except OSError:
                got = b""
            if not got:  # the client died (SIGKILL): so does its command
                os.kill(os.getpid(), signal.SIGKILL)
            if got[:1] == b"s":
                os.kill(os.getpid(), int(got[1:]))
    threading.Thread(target=relay, daemon=True).start()
    climain.parser = lambda _argv=None: parser  # type: ignore[assignment]
    sys.argv = ["cove", *argv[i:]]
    try:
        code = climain.main(argv)
    except SystemExit as e:
        code = int(e.code or 0) if not isinstance(e.code, str) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _request(srv: socket.socket, me: str, parser: argparse.ArgumentParser,
             children: dict[int, tuple[int, socket.socket]], lock: int) -> None:
    """One client: checked, then a worker forked for it (or "f")."""
    import socket
    import struct
    conn, _ = srv.accept()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 4, socket.MSG_CMSG_CLOEXEC)
        uid, gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1:]
    except (OSError, struct.error):
        conn.close()
        return
    try:
        ident, mask, argc, *rest = msg.decode("utf-8", "surrogateescape").split("\0")
        argv, env = rest[:int(argc)], dict(kv.split("=", 1) for kv in rest[int(argc):]
                                           if "=" in kv)
        if ident != me or (uid, gid) != (os.geteuid(), os.getegid()) or len(fds) != 4:
            conn.send(b"f")
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                srv.close()
                for fd, (_pid, other) in children.items():  # the other workers'
                    os.close(fd)
                    other.close()
                os.close(lock)
                code = _worker(conn, fds, int(mask), argv, env, parser)
            except BaseException as e:
                print(f"cove: run: {e}", file=sys.stderr, flush=True)
            finally:
                os._exit(code & 0xFF if code >= 0 else 0)
        children[os.pidfd_open(pid)] = (pid, conn)
        conn = None  # type: ignore[assignment]
        if not _NET[0] and _bridged(argv):
            _NET[0] = _warm_network()
    except (OSError, ValueError):
        pass
    finally:
        for fd in fds:
            os.close(fd)
        if conn is not None:
            conn.close()


def serve(root: str) -> int:
    """The server's life (see the module's docstring)."""
    import fcntl
    import select
    import socket
    import time

    from cove.engine import monctl, procs
    lock = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another one runs
    procs.set_comm("cove-runserver")
    os.chdir("/")
    # its imports (~150 ms of CPU) at the lowest priority: they must not hold up what the
    # run that started it set going (a restart's backoff, the next command); root then
    # takes its workers back to the usual priority
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    parser = _warm()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:  # pragma: no cover - not root: runs niced rather than not at all
        pass
    path = os.path.join(root, SOCK)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        srv.bind(path)
    finally:
        os.umask(old)
    srv.listen(64)
    ino = os.stat(path).st_ino
    with open(os.path.join(root, PID_FILE), "w") as f:
        f.write(f"{os.getpid()}\n")
    me = runclient.identity()
    children: dict[int, tuple[int, socket.socket]] = {}
    idle = time.monotonic()
    while True:
        ready, _, _ = select.select([srv.fileno(), *children], [], [], 0.5)
        for fd in ready:
            if fd == srv.fileno():
                _request(srv, me, parser, children, lock)
                continue
            pid, conn = children.pop(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            try:
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) != 9:
                    conn.send(b"k%d" % os.WTERMSIG(status))
                elif os.WIFEXITED(status):
                    conn.send(b"x%d" % os.WEXITSTATUS(status))
            except OSError:
                pass
            conn.close()
        if ready or children:
            idle = time.monotonic()
            continue
        try:
            gone = os.stat(path).st_ino != ino
        except OSError:
            gone = True
        if gone or time.monotonic() - idle > IDLE or not monctl.running(root):
            break
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
        os.unlink(os.path.join(root, PID_FILE))
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    return serve(argv[0])
