"""`cove-runtime checkpoint` / `restore` with a real CRIU (in the 6.1-kernel VM).

A pre-dump first (the container runs on), then the dump with it as parent.

The counter container prints an increasing number every 100 ms into a pipe we hold;
checkpointed, it is gone; restored with a new pipe as its stdout (the dumped pipe is
inherited by the restore, as runc does through descriptors.json), it goes on from the
next number. state, exec, kill and delete work on the restored container.
"""

from __future__ import annotations

import os
import select
import time

import pytest

from tests.lib.bundles import base_config
from tests.lib.criu import criu_broken
from tests.lib.runtime import Env

pytestmark = pytest.mark.skipif(bool(criu_broken()), reason=criu_broken() or "ok")

COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"]


def _lines(fd: int, n: int, timeout: float = 30.0) -> list[int]:
    """The next `n` whole lines on `fd`, as numbers."""
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {buf!r} in {timeout}s"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF after {buf!r}"
            buf += chunk
    return [int(x) for x in buf.split(b"\n")[:n]]


def _drain(fd: int) -> list[int]:
    os.set_blocking(fd, False)
    buf = b""
    try:
        while chunk := os.read(fd, 65536):
            buf += chunk
    except BlockingIOError:
        pass
    return [int(x) for x in buf.split(b"\n") if x.strip()]


def _run_piped(env: Env, args: list[str]) -> tuple[int, int]:
    """`cove-runtime ARGS` with pipes as stdin, stdout and stderr (a file outside the
    container's mounts is not something CRIU can dump): (exit code, stdout's read
    end). A container it leaves behind keeps the write ends."""
    import subprocess

    r, w = os.pipe()
    rin, win = os.pipe()
    rerr, werr = os.pipe()
    try:
        p = subprocess.run([env.rt.binary, "--root", str(env.rt.root), *args],
                           stdin=rin, stdout=w, stderr=werr, timeout=120)
    finally:
        for fd in (w, rin, win, werr):
            os.close(fd)
    os.set_blocking(rerr, False)
    try:
        err = os.read(rerr, 65536)
    except BlockingIOError:
        err = b""
    os.close(rerr)
    assert p.returncode == 0, err.decode()
    return p.returncode, r


def test_counter_checkpoint_restore(env: Env) -> None:
    cid = env.id("ck")
    b = env.bundle(base_config(COUNTER))
    _, out = _run_piped(env, ["run", "-d", "--bundle", str(b.path), cid])
    try:
        first = _lines(out, 3)
        assert first == [0, 1, 2]
        # a pre-dump (memory only; it runs on), then the dump on top of it
        pre = env.tmp / "pre"
        p = env.rt("checkpoint", "--pre-dump", "--image-path", str(pre), cid, timeout=120)
        assert p.returncode == 0, p.stderr
        assert env.rt.status(cid) == "running"
        img = env.tmp / "img"
        t0 = time.monotonic()
        p = env.rt("checkpoint", "--image-path", str(img), "--parent-path", "../pre", cid,
                   timeout=120)
        dump_s = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        assert (img / "inventory.img").exists()
        assert env.rt("state", cid).returncode != 0  # checkpointed: gone, as runc
        before = first + _drain(out)
        t0 = time.monotonic()
        _, out2 = _run_piped(env, ["restore", "-d", "--bundle", str(b.path), "--image-path",
                                   str(img), cid])
        restore_s = time.monotonic() - t0
        try:
            after = _lines(out2, 3)
            assert after[0] == before[-1] + 1, (before[-5:], after)
            assert after == list(range(after[0], after[0] + 3))
            st = env.rt.state(cid)
            assert st["status"] == "running" and st["pid"] > 0
            e = env.rt("exec", cid, "cat", "/proc/1/cmdline")
            assert e.returncode == 0 and "while" in e.stdout, e.stderr
            assert env.rt("kill", cid, "KILL").returncode == 0
            env.rt.wait_status(cid, "stopped", timeout=30)
            assert env.rt("delete", cid).returncode == 0
            print(f"\ncriu: dump {dump_s:.2f}s, restore {restore_s:.2f}s (TCG)")
        finally:
            os.close(out2)
    finally:
        os.close(out)
        env.rt("delete", "--force", cid)


def test_restore_bad_input(env: Env) -> None:
    b = env.bundle(base_config(COUNTER))
    cid = env.id("bad")
    p = env.rt("restore", "--bundle", str(b.path), "--image-path", str(env.tmp / "none"), cid)
    assert p.returncode == 1 and "inventory.img is missing" in p.stderr, p.stderr
    assert not (env.rt.root / cid).exists()
    # A truncated image: CRIU's reason, one line, nothing left.
    img = env.tmp / "trunc"
    img.mkdir()
    (img / "inventory.img").write_bytes(b"\x01\x02")
    p = env.rt("restore", "--bundle", str(b.path), "--image-path", str(img), cid, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("cove-runtime: criu restore: ") and \
        p.stderr.count("\n") == 1, p.stderr
    assert not (env.rt.root / cid).exists()
