"""The vm handler with a terminal: process.terminal + --console-socket, exec -t.

The host's pty master comes over the console socket as runc sends it; the process runs
on a pty in the guest; bytes, the window size and the exit code make the round trip.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from cove.handlers.vm import qemu
from cove.handlers.vm.console import set_winsize
from tests.lib.bundles import base_config
from tests.lib.handlers import VM_RUNTIME, no_qemu_left, runtime
from tests.lib.runtime import Env, console_server
from tests.lib.terminal import PtyMaster, PtySession

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))]


def _master(sock_thread: Any, got: dict[str, Any], proc: subprocess.Popen[bytes]) -> PtyMaster:
    deadline = time.monotonic() + 180
    while "fd" not in got:
        if proc.poll() is not None:
            raise AssertionError(f"the runtime exited ({proc.returncode}) with no terminal: "
                                 f"{proc.stderr.read() if proc.stderr else b''!r}")
        assert time.monotonic() < deadline, "no pty master came over the console socket"
        sock_thread.join(0.1)
    return PtyMaster(got["fd"])


def test_vm_terminal_run_and_exec_tty(env: Env) -> None:
    """`run --console-socket` of `sh` on a terminal: 6*7, the window size and its
    changes, ^C, an `exec -t` with a resize and ^D, then `exit 3` as the exit code."""
    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["sh"])
    cfg["process"]["terminal"] = True
    cfg["process"]["consoleSize"] = {"height": 30, "width": 100}
    b = env.bundle(cfg)
    cid = env.id("vm")
    sock = env.tmp / "console.sock"
    got: dict[str, Any] = {}
    t = console_server(sock, got)
    p = subprocess.Popen([VM_RUNTIME, "--root", str(rt.root), "run", "--bundle", str(b.path),
                          "--console-socket", str(sock), cid],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        con = _master(t, got, p)
        assert got["name"].startswith("/dev/pts/")
        con.send(b"echo $((6*7)); tty; stty size\n")
        out = con.expect(b"30 100", timeout=60)
        assert b"\r\n42\r\n" in out, out  # the guest's line discipline: onlcr
        assert b"/dev/pts/0" in out or b"/dev/console" in out, out
        set_winsize(con.fd, 50, 132)  # the engine resizes: SIGWINCH -> the guest's pty
        time.sleep(0.5)
        con.send(b"stty size\n")
        con.expect(b"50 132", timeout=60)
        con.send(b"sleep 1000\n")
        time.sleep(1)
        con.send(b"\x03")  # ^C: the guest's line discipline interrupts sleep, not sh
        con.send(b"echo after-$((1+1))\n")
        con.expect(b"after-2", timeout=60)

        sock2 = env.tmp / "exec.sock"
        got2: dict[str, Any] = {}
        t2 = console_server(sock2, got2)
        e = subprocess.Popen([VM_RUNTIME, "--root", str(rt.root), "exec", "-t",
                              "--console-socket", str(sock2), cid, "sh"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            econ = _master(t2, got2, e)
            set_winsize(econ.fd, 40, 120)
            time.sleep(0.5)
            econ.send(b"tty; stty size; (exit 4)\n")
            out = econ.expect(b"40 120", timeout=60)
            assert b"/dev/pts/" in out, out
            econ.expect(b"# ", timeout=60)  # the next prompt: sh reads its terminal again
            time.sleep(0.5)
            econ.send(b"\x04")  # ^D: sh reads EOF, exits with the last status
            assert e.wait(timeout=60) == 4, e.stderr.read() if e.stderr else b""
        finally:
            if e.poll() is None:
                e.kill()
                e.wait()
            if "fd" in got2:
                os.close(got2["fd"])

        con.send(b"exit 3\n")
        assert p.wait(timeout=60) == 3, p.stderr.read() if p.stderr else b""
        os.close(con.fd)
    finally:
        if p.poll() is None:
            rt("delete", "--force", cid)
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()
    assert rt("state", cid).returncode == 1  # run deleted it
    assert not no_qemu_left()


def test_vm_terminal_needs_console_socket(env: Env) -> None:
    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["sh"])
    cfg["process"]["terminal"] = True
    b = env.bundle(cfg)
    r = rt("create", "--bundle", str(b.path), env.id("vm"))
    assert r.returncode == 1, r.stderr
    assert r.stderr == "cove-runtime: process.terminal: needs --console-socket\n"
    state = env.tmp / "state"
    assert not state.exists() or not list(state.iterdir())


def test_vm_run_on_our_terminal(env: Env) -> None:
    """`run` with process.terminal and no --console-socket relays the runtime's own
    terminal (as runc does): here a pty, as a user at a shell would have."""

    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["sh"])
    cfg["process"]["terminal"] = True
    b = env.bundle(cfg)
    cid = env.id("vm")
    s = PtySession([VM_RUNTIME, "--root", str(rt.root), "run", "--bundle", str(b.path), cid])
    try:
        s.expect(b"# ", timeout=180)
        s.send(b"echo MARK$((6*7))\r")
        s.expect(b"MARK42", timeout=60)
        s.send(b"exit 3\r")
        assert s.wait(timeout=60) == 3
    finally:
        if rt("state", cid).returncode == 0:
            rt("delete", "--force", cid)
    assert not no_qemu_left()
