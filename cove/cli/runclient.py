"""`cove run`'s side of its warm server (cove/cli/runserver.py, whose docstring says
why and how): send the command there, relay the signals, exit with its status; and
start the server after a run made without it. Imports nothing beyond os and sys at
the top: this is what every `cove` command runs first (cove/cli/main.py).
"""

from __future__ import annotations

import os
import sys

SOCK, PID_FILE, LOCK = "run.sock", "run.pid", "run.lock"
NS = ("mnt", "net", "pid", "user", "ipc", "uts", "cgroup")
PROXIED = (1, 2, 3, 10, 12, 15)  # as cove/engine/container/sigproxy.py
SERVED = False  # in a worker: the command runs here, never sent on


def identity() -> str:
    """What must be the same in client and server: the namespaces, the root directory,
    the interpreter and the Cove source tree (a server started by another checkout or
    install runs its own code, not the caller's)."""
    out = [sys.executable, os.path.dirname(os.path.abspath(__file__))]
    for ns in NS:
        try:
            out.append(str(os.stat(f"/proc/self/ns/{ns}").st_ino))
        except OSError:
            out.append("-")
    st = os.stat("/")
    out.append(f"{st.st_dev}.{st.st_ino}")
    return ",".join(out)


def root_of(argv: list[str]) -> str | None:
    """The state root of `cove [--root R] run ...`, or None for any other command line."""
    root = ""
    i = 0
    while i < len(argv) and argv[i].startswith("--root"):
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif argv[i].startswith("--root="):
            root, i = argv[i][7:], i + 1
        else:
            return None
    if i >= len(argv) or argv[i] != "run":
        return None
    if not root:
        if os.geteuid() == 0:
            root = "/var/lib/cove"
        else:
            base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
            root = os.path.join(base, "cove")
    return os.path.abspath(root)




def client(argv: list[str]) -> int | None:
    """Run `argv` (`cove ... run ...`) in the root's server: its exit status, or None
    when the caller must run it itself (no server, or one that can't run it)."""
    if SERVED or os.environ.get("COVE_RUN_SERVER") == "0":
        return None
    root = root_of(argv)
    if root is None:
        return None
    import _signal
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        s.connect(os.path.join(root, SOCK))
    except OSError:
        s.close()
        return None
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        mask = os.umask(0)
        os.umask(mask)
        msg = "\0".join([identity(), str(mask), str(len(argv)), *argv,
                         *(f"{k}={v}" for k, v in os.environ.items())])
        import array
        fds = array.array("i", [0, 1, 2, cwd])
        s.sendmsg([msg.encode("utf-8", "surrogateescape")],
                  [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds.tobytes())])
    except OSError:
        s.close()
        return None
    finally:
        os.close(cwd)
    last = [0]

    def relay(signum: int, _frame: object) -> None:
        last[0] = signum
        try:
            s.send(b"s%d" % signum)
        except OSError:
            pass
    old = {n: _signal.signal(n, relay) for n in PROXIED}
    try:
        while True:
            try:
                got = s.recv(64)
            except OSError:
                got = b""
            if got == b"f":
                return None  # not for the server: ours to run
            if got[:1] == b"x":
                return int(got[1:])
            if got[:1] == b"k" or not got:
                sig = int(got[1:]) if got else last[0]
                if sig:  # the worker died of it: so do we, as the CLI would have
                    _signal.signal(sig, _signal.SIG_DFL)
                    sys.stdout.flush()
                    os.kill(os.getpid(), sig)
                print("cove: run: its worker ended with no exit status", file=sys.stderr)
                return 125
    finally:
        for n, h in old.items():
            _signal.signal(n, h)
        s.close()


def start(root: str) -> None:
    """Start the root's server in the background, unless one runs (called after a run
    made without it; the run does not wait)."""
    if SERVED or os.environ.get("COVE_RUN_SERVER") == "0" or \
            not os.path.exists(os.path.join(root, "monitor.sock")):
        return
    if os.path.exists(os.path.join(root, SOCK)):
        try:
            with open(os.path.join(root, PID_FILE)) as f:
                os.kill(int(f.read().strip() or 0), 0)
            return  # runs (and answers, or is about to)
        except (OSError, ValueError):
            pass
    from cove.engine import spawn
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_spawn(sys.executable, spawn.argv("runserver", root, pkg="cove.cli"),
                       dict(os.environ), setsid=True, file_actions=[
                           (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                           (os.POSIX_SPAWN_DUP2, null, 2)])
    except OSError:
        pass
    finally:
        os.close(null)
