"""linux.seccomp: errno rules, argument filters, SCMP_ACT_NOTIFY with a listener."""

from __future__ import annotations

import array
import fcntl
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from tests.lib.bundles import base_config
from tests.lib.runtime import Env
from tests.lib.security import bundle, run

ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
# <linux/seccomp.h>: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, ..._resp)
NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101
SYS_MKDIR, SYS_MKDIRAT = 83, 258


def _profile(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHES, "syscalls": rules,
            **extra}


def test_errno_rule(env: Env, probe_bin: Path) -> None:
    cfg = base_config(["probe", "mkdir", "/tmp/d"])
    cfg["linux"]["seccomp"] = _profile([{"names": ["mkdir", "mkdirat"],
                                         "action": "SCMP_ACT_ERRNO", "errnoRet": 39}])
    _code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg))
    assert out == "err 39\n", (out, err)


def test_argument_filter_matches_only_its_value(env: Env, probe_bin: Path) -> None:
    cfg = base_config(["sh", "-c", "probe personality 0x0008; probe personality 0xffffffff;"
                                   " probe kill $$ 0; probe kill $$ 18"])
    cfg["linux"]["seccomp"] = _profile([
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
         "args": [{"index": 1, "value": 18, "op": "SCMP_CMP_EQ"}]},
    ])
    _code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg))
    lines = out.splitlines()
    assert lines[0].startswith("ok ") and lines[1] == "err 22", (out, err)
    assert lines[2] == "ok 0" and lines[3] == "err 33", (out, err)


def test_masked_eq_clone_filter_of_default_profile(env: Env, probe_bin: Path) -> None:
    """Docker's clone rule: namespace flags need CAP_SYS_ADMIN; plain clone is fine."""
    cfg = base_config(["sh", "-c", "probe clone 0x20000; probe clone 0"])
    _code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg))
    assert out.split("\n")[:2] == ["err 1", "ok 0"], (out, err)


class Agent:
    """A seccomp agent: receives the state and the fd at listenerPath, then answers
    every notification with `answer(nr) -> (val, -errno)`."""

    def __init__(self, path: Path, answer: Any) -> None:
        self.state: dict[str, Any] = {}
        self.seen: list[int] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.srv.settimeout(30)
        self.answer = answer
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        fds = array.array("i")
        msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(fds.itemsize))
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        self.state = json.loads(msg)
        conn.close()
        fd = fds[0]
        while True:
            buf = bytearray(80)  # struct seccomp_notif
            try:
                fcntl.ioctl(fd, NOTIF_RECV, buf)
            except OSError:
                break  # the filter's last user exited
            nid, _pid, _flags, nr = struct.unpack_from("=QIIi", buf)
            self.seen.append(nr)
            val, error = self.answer(nr)
            resp = bytearray(struct.pack("=QqiI", nid, val, error, 0))
            try:
                fcntl.ioctl(fd, NOTIF_SEND, resp)
            except OSError:
                pass


def test_notify_listener(env: Env, probe_bin: Path) -> None:
    sock = env.tmp / "agent.sock"
    agent = Agent(sock, lambda nr: (0, -13) if nr in (SYS_MKDIR, SYS_MKDIRAT) else (42, 0))
    cfg = base_config(["sh", "-c", "probe mkdir /tmp/a; probe syscall 95; ls -d /tmp/a 2>&1"])
    cfg["linux"]["seccomp"] = _profile(
        [{"names": ["mkdir", "mkdirat", "umask"], "action": "SCMP_ACT_NOTIFY"}],
        listenerPath=str(sock), listenerMetadata="meta-data-1")
    b = bundle(env, probe_bin, cfg)
    _code, out, err = run(env.rt, env, b)
    agent.t.join(10)
    lines = out.splitlines()
    assert lines[0] == "err 13", (out, err)  # mkdir answered EACCES
    assert lines[1] == "ok 42", (out, err)  # umask (95) answered with success value 42
    assert "No such file" in lines[2]  # the answer replaced the syscall: nothing made
    st = agent.state
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "meta-data-1", st
    assert st["ociVersion"] and st["pid"] > 0 and st["state"]["bundle"] == str(b.path), st
    assert st["state"]["status"] == "creating", st


def test_notify_exec(env: Env, probe_bin: Path) -> None:
    """An exec'd process under a notify profile: the listener gets its own fd."""
    sock = env.tmp / "agent.sock"
    cfg = base_config(["sleep", "30"])
    cfg["linux"]["seccomp"] = _profile(
        [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}], listenerPath=str(sock))
    b = bundle(env, probe_bin, cfg)
    cid = env.id()
    first = Agent(sock, lambda nr: (0, -1))
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    try:
        first.t.join(10)
        first.srv.close()
        sock.unlink()
        second = Agent(sock, lambda nr: (0, -28))
        env.rt("start", cid, check=True)
        p = env.rt("exec", cid, "probe", "mkdir", "/tmp/x")
        assert p.stdout == "err 28\n", (p.stdout, p.stderr)
        assert second.state["state"]["status"] == "running", second.state
    finally:
        env.rt("delete", "--force", cid)
