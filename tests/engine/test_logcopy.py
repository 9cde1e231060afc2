"""The monitor's log copy is exactly once: a copier SIGKILLed at random moments, again
and again, while a writer fills its FIFO, leaves a log with every line once, in order.

No container is needed for this: a FIFO, a writer process, and a reader process that
stands for the monitor (the test itself holds a read end, as the keeper does, so that
the pipe keeps its contents between readers)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cove.engine import logcopy
from cove.engine import logs as engine_logs

REPO = Path(__file__).resolve().parents[2]

N = 20000


class _Slow(logcopy.Copier):
    """Stretches the windows a kill must be able to hit: before the log write, between
    it and the consume, and between the consume and the journal's phase 0."""

    def _consume(self, fd: int, o: int, n: int) -> None:
        time.sleep(0.001)
        super()._consume(fd, o, n)
        time.sleep(0.001)


class _SlowWriter(engine_logs.JsonFileWriter):
    def append(self, blob: bytes) -> None:
        time.sleep(0.001)
        super().append(blob)


def _copier_child(cdir: str, fifo: str, stop_at_end: bool) -> None:  # pragma: no cover
    code = 1
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        c = _Slow(cdir, _SlowWriter(engine_logs.log_path(cdir)), logcopy.Scratch())
        c.recover(fd, "stdout")
        while True:
            done = c.pump(fd, "stdout", last=stop_at_end)
            if done:
                break
            if done is False:
                if stop_at_end and not os.path.exists(os.path.join(cdir, "writing")):
                    c.pump(fd, "stdout", last=True)
                    break
                time.sleep(0.0005)
        code = 0
    finally:
        os._exit(code)


def _scenario(where: str) -> int:  # pragma: no cover - in a fresh interpreter
    """The writer and the copiers killed again and again, until the writer is done and
    a last copier finishes: the count of kills. Run by a small interpreter of its own:
    a fork of pytest's process (hundreds of MiB in a full run) takes long enough to use
    up a copier's few-ms window, and the test then took minutes instead of seconds."""
    cdir = Path(where)
    fifo = str(cdir / "stdout.fifo")
    os.mkfifo(fifo, 0o600)
    keep = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the keeper's copy
    (cdir / "writing").touch()
    writer = os.fork()
    if writer == 0:  # pragma: no cover - the container
        try:
            w = os.open(fifo, os.O_WRONLY)
            for i in range(1, N + 1, 10):
                os.write(w, "".join(f"line {j}\n" for j in range(i, i + 10)).encode())
                if i % 200 == 1:
                    time.sleep(0.001)
            os.unlink(cdir / "writing")
            os.write(w, b"tail without a newline")
        finally:
            os._exit(0)
    rng = random.Random(7)
    kills = 0
    try:
        while os.path.exists(cdir / "writing"):
            pid = os.fork()
            if pid == 0:  # pragma: no cover
                _copier_child(str(cdir), fifo, False)
            time.sleep(rng.uniform(0.0005, 0.02))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
        os.waitpid(writer, 0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _copier_child(str(cdir), fifo, True)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(keep)
    return kills


def test_a_copier_killed_at_any_moment_copies_each_line_once(tmp_path: Path) -> None:
    cdir = tmp_path / "c"
    cdir.mkdir()
    r = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path[0:0] = [sys.argv[1]]; "
         "from tests.engine.test_logcopy import _scenario; print(_scenario(sys.argv[2]))",
         str(REPO), str(cdir)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    kills = int(r.stdout.split()[-1])
    log = Path(engine_logs.log_path(str(cdir)))
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    text = [e["log"] for e in entries]
    assert text[-1] == "tail without a newline"
    got = [int(t.split()[1]) for t in text[:-1]]
    assert got == list(range(1, N + 1)), f"after {kills} kills: lines lost or twice"
    assert kills > 10


def test_a_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    cdir = str(tmp_path)
    r, w = os.pipe2(os.O_NONBLOCK)
    writer = engine_logs.JsonFileWriter(engine_logs.log_path(cdir))
    c = logcopy.Copier(cdir, writer, logcopy.Scratch())
    os.write(w, b"one\ntw")
    assert c.pump(r, "stdout") is False
    os.write(w, b"o\n" + b"x" * (engine_logs.MAX_LINE + 5))
    assert c.pump(r, "stdout") is False
    os.close(w)
    assert c.pump(r, "stdout", last=True) is True
    c.close()
    logs = [json.loads(x)["log"] for x in Path(engine_logs.log_path(cdir)).read_text().splitlines()]
    assert logs == ["one\n", "two\n", "x" * engine_logs.MAX_LINE, "xxxxx"]
