"""docker's `--detach-keys` on a real pty: `cove run -it`, `cove attach` and `cove start
-ai` of a terminal container; the keys given replace ctrl-p ctrl-q (which then reach
the container), and a bad key is one line with nothing made."""

from __future__ import annotations

import sys

from tests.lib.engine import Cove, cove_terminal


def _cmd(cove: Cove) -> list[str]:
    return [sys.executable, "-m", "cove.cli.main", "--root", cove.root]


def _status(cove: Cove, name: str) -> str:
    return str(cove("inspect", "-f", "{{.State.Status}}", name).stdout.strip())


def test_detach_keys_run_attach_start(cove: Cove) -> None:
    t = cove_terminal([*_cmd(cove), "run", "-it", "--detach-keys", "ctrl-x,x", "--name", "dk",
                       "--network", "none", "busybox", "cat"])
    t.send(b"one\r")
    t.expect(b"one\r\n")          # (the terminal's echo, then cat's copy)
    t.expect(b"one\r\n")
    t.send(b"\x10\x11two\r")      # the default keys are plain input now
    t.expect(b"two\r\n")
    t.send(b"\x18y three\r")      # half the sequence: both bytes go on to the container
    t.expect(b"y three\r\n")
    t.send(b"\x18x")
    assert t.wait() == 0
    assert _status(cove, "dk") == "running"
    t = cove_terminal([*_cmd(cove), "attach", "--detach-keys", "ctrl-a", "dk"])
    t.send(b"four\r")
    t.expect(b"four\r\n")
    t.send(b"\x01")
    assert t.wait() == 0
    assert _status(cove, "dk") == "running"
    cove("stop", "-t", "0", "dk")
    t = cove_terminal([*_cmd(cove), "start", "-ai", "--detach-keys", "ctrl-b,b", "dk"])
    t.send(b"five\r")
    t.expect(b"five\r\n")
    t.send(b"\x02b")
    assert t.wait() == 0
    assert _status(cove, "dk") == "running"
    cove("rm", "-f", "dk")


def test_bad_detach_keys_are_one_line(cove: Cove) -> None:
    for argv in (["run", "-it", "--detach-keys", "ctrl-1", "--network", "none", "busybox",
                  "true"],
                 ["run", "--detach-keys", "ctrl-", "--network", "none", "busybox", "true"]):
        r = cove(*argv, check=False)
        assert r.returncode != 0, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cove: --detach-keys ctrl-"), r
        assert "invalid detach key" in lines[0], r
    assert cove("ps", "-a", "-q").stdout == ""
