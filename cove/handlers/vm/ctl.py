"""The vm handler's verbs that talk to a running VM: exec, ps and update through the
monitor's ctl.sock (each client gets a channel of its own to the guest agent), pause and
resume through qemu's QMP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

from cove.errors import CoveError, os_why
from cove.handlers.vm import proto
from cove.oci import jsonio
from cove.runtime import state as runtime_state

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2)


def status(st: runtime_state.State) -> str:
    s = st.status()
    if s == "running" and st.data.get("paused"):
        return "paused"
    return s


def connect(st: runtime_state.State, name: str) -> socket.socket:
    if not st.alive():
        raise CoveError(f"container {st.id!r}", "container not running")
    dfd = os.open(st.dir, os.O_PATH | os.O_CLOEXEC)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(f"/proc/self/fd/{dfd}/{name}")
    except OSError as e:
        s.close()
        raise CoveError(f"container {st.id!r}", f"{name}: {os_why(e)}") from None
    finally:
        os.close(dfd)
    return s


def _request(st: runtime_state.State, kind: int, payload: bytes, reply: int, what: str,
             timeout: float = 30) -> bytes:
    """One request on a channel of its own; the guest's reply (`reply` or ERROR)."""
    s = connect(st, "ctl.sock")
    try:
        s.sendall(proto.pack(0, kind, payload))
        reader = proto.Reader()
        s.settimeout(timeout)
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                raise CoveError(what, f"the guest did not answer in {timeout:g}s") from None
            if not data:
                raise CoveError(what, "the VM went away")
            for _, k, body in reader.feed(data):
                if k == proto.ERROR:
                    raise CoveError(what, json.loads(body)["error"])
                if k == reply:
                    return body
    finally:
        s.close()


def _qmp(root: str, cid: str, command: str) -> None:
    st = runtime_state.load(root, cid)
    s = connect(st, "qmp.sock")
    f = s.makefile("rwb")
    try:
        f.readline()
        for c in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": c}).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline() or b"{}")
                if "event" not in reply:
                    break
            if "error" in reply:
                raise CoveError(f"{command} {cid}", str(reply["error"].get("desc")))
    finally:
        f.close()
        s.close()
    st.data["paused"] = command == "stop"
    st.save()


def pause(root: str, cid: str) -> None:
    _qmp(root, cid, "stop")


def resume(root: str, cid: str) -> None:
    _qmp(root, cid, "cont")


def ps(root: str, cid: str, fmt: str) -> str:
    st = runtime_state.load(root, cid)
    if fmt not in ("json", "table"):
        raise CoveError(f"--format {fmt}", "expected table or json")
    pids: list[int] = []
    if status(st) != "stopped":
        pids = json.loads(_request(st, proto.PS, b"", proto.PS, f"ps {cid}"))["pids"]
    if fmt == "json":
        return jsonio.dumps(pids) + "\n"
    return "PID (in the guest)\n" + "".join(f"{p}\n" for p in pids)


def update(root: str, cid: str, resources: dict[str, Any]) -> None:
    """Apply linux.resources to the container's cgroup in the guest (the VM's own size,
    its memory and vCPUs, stays what create gave it)."""
    st = runtime_state.load(root, cid)
    if status(st) not in ("created", "running"):  # paused: the guest cannot answer
        raise CoveError(f"container {cid!r}", f"cannot update a {status(st)} container")
    limit = (resources.get("memory") or {}).get("limit")
    mem = int(st.data.get("memory_mib", 0))
    if isinstance(limit, int) and limit > 0 and mem and limit > mem << 20:
        raise CoveError(f"update {cid}: memory.limit {limit}",
                        f"above the VM's memory ({mem} MiB, set at create)")
    _request(st, proto.UPDATE, json.dumps(resources).encode(), proto.READY, f"update {cid}")


def exec_process(root: str, cid: str, proc: dict[str, Any], detach: bool, pid_file: str,
                 console_socket: str = "") -> int:
    """Run `proc` in the guest's container; relay its stdio (or its terminal, through a
    host pty whose master goes to --console-socket); its exit code is ours."""
    from cove.handlers.vm import console
    from cove.runtime.caller import write_pid_file

    tty = bool(proc.get("terminal"))
    if tty and not console_socket:
        raise CoveError("exec --tty", "needs --console-socket")
    st = runtime_state.load(root, cid)
    if status(st) != "running":
        raise CoveError(f"container {cid!r}", f"cannot exec in a {status(st)} container")
    pid_file = os.path.abspath(pid_file) if pid_file else ""
    csock = console.connect(console_socket) if tty else -1
    master = slave = -1
    try:
        s = connect(st, "ctl.sock")
        s.sendall(proto.pack(0, proto.EXEC, json.dumps(proc).encode()))
        reader = proto.Reader()
        pending: list[tuple[int, int, bytes]] = []
        while True:  # until the guest says the process runs (or why it does not)
            data = s.recv(65536)
            if not data:
                raise CoveError(f"exec {cid}", "the VM went away")
            frames = reader.feed(data)
            kinds = [k for _, k, _ in frames]
            if proto.ERROR in kinds:
                err = next(p for _, k, p in frames if k == proto.ERROR)
                raise CoveError(f"exec {cid}", json.loads(err)["error"])
            pending += [f for f in frames if f[1] != proto.READY]  # output may come first
            if proto.READY in kinds:
                break
        if tty:
            master, slave = console.open_pty(console.console_size(proc))
            console.send_master(csock, master, slave)
            csock = -1
            os.close(master)
            master = -1
    finally:
        for fd in (csock, master):
            if fd >= 0:
                os.close(fd)
    if detach or tty:
        # A terminal's relay leads a session of its own, the pty its controlling
        # terminal, so that resizes reach it (SIGWINCH) and a hang-up too (SIGHUP).
        child = os.fork()
        if child == 0:
            code = 255
            try:
                os.setsid()
                if slave >= 0:
                    console.take_ctty(slave)
                code = _relay(s, reader, pending, slave)
            finally:
                os._exit(code)
        s.close()
        if slave >= 0:
            os.close(slave)
        if pid_file:
            write_pid_file(pid_file, child)
        if detach:
            return 0
        from cove.runtime.caller import wait_forwarding

        return wait_forwarding(child)
    if pid_file:
        write_pid_file(pid_file, os.getpid())
    return _relay(s, reader, pending, -1)


def _relay(s: socket.socket, reader: proto.Reader, pending: list[tuple[int, int, bytes]],
           tty: int) -> int:
    """Relay frames <-> our stdio (or the pty slave `tty`) until the process's EXIT."""
    import select

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    for sig in (*RELAYED, signal.SIGWINCH):
        signal.signal(sig, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    infd, outfd, errfd = (tty, tty, tty) if tty >= 0 else (0, 1, 2)
    stdin_open = True
    frames = pending
    if tty >= 0:
        _resize(s, tty)
    while True:
        for _, kind, payload in frames:
            try:
                if kind == proto.STDOUT:
                    proto.write_all(outfd, payload)
                elif kind == proto.STDERR:
                    proto.write_all(errfd, payload)
            except OSError:
                if tty < 0:
                    raise
            if kind == proto.EXIT:
                st = json.loads(payload)["status"]
                return os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
        frames = []
        fds = [s.fileno(), wake_r] + ([infd] if stdin_open else [])
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                got = os.read(wake_r, 512)
            except BlockingIOError:
                got = b""
            for n in got:
                if n == signal.SIGWINCH:
                    if tty >= 0:
                        _resize(s, tty)
                elif n in RELAYED:
                    s.sendall(proto.pack(0, proto.SIGNAL, json.dumps({"signal": n}).encode()))
        if infd in ready and stdin_open:
            try:
                data = os.read(infd, 65536)
            except OSError:  # EIO: a hung-up terminal
                data = b""
            if data or tty < 0:
                s.sendall(proto.pack(0, proto.STDIN, data))
            stdin_open = bool(data)
        if s.fileno() in ready:
            data = s.recv(65536)
            if not data:
                return 255
            frames = reader.feed(data)


def _resize(s: socket.socket, tty: int) -> None:
    from cove.handlers.vm.console import winsize

    rows, cols = winsize(tty)
    if rows and cols:
        s.sendall(proto.pack(0, proto.RESIZE, json.dumps({"rows": rows, "cols": cols}).encode()))


def process_from(st_root: str, cid: str, process_file: str, args: list[str], env: list[str],
                 cwd: str, user: str, tty: bool = False) -> dict[str, Any]:
    """The exec'd process: --process FILE, or the container's with runc's overrides."""
    from cove.oci.spec import Process

    if process_file:
        try:
            with open(process_file, "rb") as f:
                obj = jsonio.loads(f.read())
        except OSError as e:
            raise CoveError(f"--process {process_file}", os_why(e)) from None
        if not isinstance(obj, dict):
            raise CoveError("process", "expected object")
    else:
        if not args:
            raise CoveError("exec", "a process (--process FILE) or arguments are required")
        st = runtime_state.load(st_root, cid)
        obj = dict(jsonio.loads(st.config_bytes()).get("process") or {})
        obj["args"] = args
        obj["terminal"] = tty
        obj.pop("consoleSize", None)
        if cwd:
            obj["cwd"] = cwd
        if env:
            obj["env"] = list(obj.get("env") or []) + env
        if user:
            uid, _, gid = user.partition(":")
            if not uid.isdigit() or (gid and not gid.isdigit()):
                raise CoveError(f"--user {user}", "expected UID[:GID] as numbers")
            obj["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    Process(obj, "process", need_cwd=False)  # validate here, not after a round trip
    return obj
