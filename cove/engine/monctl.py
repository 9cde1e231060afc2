"""The engine's side of the monitor (cove/engine/monitor.py): start the root's keeper
and monitor when none runs, ask the monitor to start or adopt a container, stop both.

A request is one SOCK_SEQPACKET message on `<root>/monitor.sock`: "start" or "adopt",
the container's name and the caller's environment (the runtime runs with it),
NUL-separated, with one fd: the pipe the answer comes on ("ok", or "error: ...").
"""

from __future__ import annotations

import os
import signal
import socket
import time

from cove.engine import procs, spawn, state
from cove.errors import CoveError

SOCK = "monitor.sock"


def _send(root: str, msg: bytes, sync: int) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(10)
        s.connect(os.path.join(root, SOCK))
        socket.send_fds(s, [msg], [sync])
        return s.recv(16) == b"ok"
    except OSError:
        return False
    finally:
        s.close()


def _start_keeper(root: str, env: dict[str, str]) -> str:
    """Start the keeper (which forks the monitor); "" once the monitor listens (or
    another keeper won the race), else why not."""
    import subprocess
    r, w = os.pipe()
    logf = os.open(os.path.join(root, "zygote.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        p = subprocess.Popen(spawn.argv("zygote", root, str(w)), pass_fds=[w],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, env=env, cwd="/")
    except OSError as e:
        return str(e)
    finally:
        os.close(w)
        os.close(logf)
    with os.fdopen(r, "rb") as f:
        line = f.readline().decode(errors="replace").strip()
    if line == "ok":
        return ""
    try:
        p.wait(5)  # it leaves when its monitor can't start
    except subprocess.TimeoutExpired:
        pass
    return _last_line(os.path.join(root, "zygote.log")) or \
        f"it exited with status {p.returncode}"


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


def request(root: str, op: str, name: str, env: dict[str, str] | None = None) -> str:
    """Send `op` for container `name` to the root's monitor, starting it when none
    answers; the answer ("ok" or "error: ...")."""
    env = dict(os.environ) if env is None else env
    msg = "\0".join([op, name, *(f"{k}={v}" for k, v in env.items())]).encode(
        "utf-8", "surrogateescape")
    r, w = os.pipe()
    try:
        sent = _send(root, msg, w)
        if not sent:
            why = _start_keeper(root, env)
            if why:
                raise CoveError("monitor", f"cannot start: {why}")
            deadline = time.monotonic() + 10
            while not (sent := _send(root, msg, w)) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not sent:
                raise CoveError("monitor", "cannot start: it does not answer on "
                                f"{os.path.join(root, SOCK)}")
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        return f.readline().decode(errors="replace").strip()


def running(root: str) -> int:
    """The pid of the root's monitor, or 0."""
    try:
        with open(os.path.join(root, "monitor.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    return pid if pid > 0 and state.pid_alive(pid) and procs.comm(pid) == "cove-monitor" else 0


def check_namespaces(root: str, name: str, networked: bool) -> None:
    """Refuse to start `name` under a monitor that runs in another mount namespace (it
    could not see the container's root) or, for a container on a network, in another
    network namespace: the first start wires the container here, but the monitor's
    restarts would make its bridge, nft rules and forwarding there (a monitor started
    from the host, a `cove run` from a private namespace: the host's network touched)."""
    pid = running(root)
    if not pid:
        return
    for ns, what in (("mnt", "mount"), ("net", "network"))[:2 if networked else 1]:
        try:
            a, b = os.stat(f"/proc/{pid}/ns/{ns}"), os.stat(f"/proc/self/ns/{ns}")
        except OSError:
            continue
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            raise CoveError(f"container {name}", f"the monitor of {root} (pid {pid}) "
                            f"runs in another {what} namespace than this command: run "
                            "cove in that one, or stop the monitor first (cove --root "
                            f"{root} supervisor stop)")


def stop_monitor(root: str, timeout: float = 5.0) -> None:
    """End the root's keeper and monitor (SIGTERM: the keeper stops the monitor first,
    so that neither restarts the other). Running containers carry on; the next command
    that needs a monitor starts one, which adopts them."""
    pids = []
    for f, comm in (("zygote.pid", "cove-zygote"), ("monitor.pid", "cove-monitor"),
                    ("run.pid", "cove-runserver")):  # (and `cove run`'s warm server)
        try:
            with open(os.path.join(root, f)) as fh:
                pid = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0 and state.pid_alive(pid) and procs.comm(pid) == comm:
            pids.append(pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while any(state.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        for p in pids:
            try:
                os.waitpid(p, os.WNOHANG)  # ours only when this process started it
            except ChildProcessError:
                pass
        time.sleep(0.02)
    for pid in pids:
        if state.pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for f in ("zygote.pid", "monitor.pid", SOCK, "run.pid", "run.sock"):
        try:
            os.unlink(os.path.join(root, f))
        except OSError:
            pass


def ensure(root: str) -> int:
    """The pid of the root's monitor, starting it (and its keeper) when none runs."""
    line = request(root, "ping", "")
    if line != "ok":
        raise CoveError("monitor", line.removeprefix("error: ") or "it does not answer")
    return running(root)


def stop(root: str) -> bool:
    """Stop the root's monitor and keeper (`cove supervisor stop`); whether one ran.
    Running containers carry on: the next command that needs a monitor starts one,
    which adopts them."""
    ran = bool(running(root))
    stop_monitor(root)
    return ran
