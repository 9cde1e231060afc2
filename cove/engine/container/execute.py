"""`exec`: a command in a running container through `cove-runtime exec`, its failure
to start as docker's message and status (126, 127), and with -t over a terminal the
runtime hands back on a console socket."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from cove.engine import state
from cove.engine.container.refresh import refresh_record
from cove.engine.container.rtcmd import exec_argv
from cove.errors import CoveError


def exec_(root: str, name: str, cmd: list[str], *, tty: bool = False,
          interactive: bool = False, detach: bool = False, env: list[str] | None = None,
          user: str | None = None, workdir: str | None = None) -> int:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    rec = refresh_record(paths, name)
    if rec["State"]["Status"] != "running":
        raise CoveError(f"container {name}", "is not running")
    args = exec_argv(paths, env or [], user, workdir)
    if detach:
        args.append("-d")
    if not tty:
        return _exec_plain([*args, name, *cmd], name, interactive)
    return _exec_tty(args, name, cmd, paths.cdir(name))


def _exec_plain(argv: list[str], name: str, interactive: bool) -> int:
    """`cove-runtime exec` with the command's stdout straight through and its stderr
    relayed, so that the runtime's own report that the command can't be run (`exec:
    'X': executable file not found in $PATH`) becomes docker's message and exit status
    (127 not found, 126 not invocable) instead of a runtime line and status 1. Only the
    runtime's lines (`cove-runtime: ...`) are held back until the end; the command's
    stderr passes at once."""
    from cove.engine.hostconfig import exec_error
    p = subprocess.Popen(argv, stdin=None if interactive else subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    assert p.stderr is not None
    held: list[bytes] = []
    err = sys.stderr.buffer
    for line in p.stderr:
        if line.startswith(b"cove-runtime: "):
            held.append(line)
            continue
        err.write(line)
        err.flush()
    code = p.wait()
    if code != 0 and held:
        text = held[-1].decode(errors="replace").strip().removeprefix("cove-runtime: ")
        mapped = exec_error(CoveError(f"container {name}", text))
        if mapped is not None:
            err.write(b"".join(held[:-1]))
            err.flush()
            raise mapped
    err.write(b"".join(held))
    err.flush()
    return code


def _exec_tty(args: list[str], name: str, cmd: list[str], cdir: str) -> int:
    import socket

    from cove.runtime.caller import relay as _relay
    path = os.path.join(cdir, f"console-{os.getpid()}.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        p = subprocess.Popen([*args, "-t", "--console-socket", path, name, *cmd])
        conn, _ = srv.accept()
        _msg, anc, _f, _a = conn.recvmsg(4096, socket.CMSG_SPACE(4))
        conn.close()
        master = -1
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                master = int.from_bytes(data[:4], "little")
        if master < 0:
            return p.wait()
        try:
            _relay(master, p.pid)
        finally:
            os.close(master)
        return p.wait()
    finally:
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
