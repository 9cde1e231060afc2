"""The attach endpoint's `detachKeys` (docker's `--detach-keys`) through a real pty and
the docker CLI: the keys given detach (the container runs on) and the default ctrl-p
ctrl-q become plain input."""

from __future__ import annotations

import time

from tests.lib.api import Api


def _running(api: Api, name: str) -> bool:
    return bool(api.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
                == "running")


def test_attach_and_run_with_detach_keys(api: Api) -> None:
    api.docker("run", "-dit", "--name", "dka", "--network", "none", "busybox", "cat")
    t = api.terminal("attach", "--detach-keys", "ctrl-x,x", "dka")
    try:
        time.sleep(0.3)
        t.send(b"one\r")
        t.expect(b"one\r\n")
        t.send(b"\x10\x11two\r")   # not the keys now: input for the container
        t.expect(b"two\r\n")
        t.send(b"\x18x")
        t.wait()
    finally:
        t.close()
    assert _running(api, "dka")
    api.docker("rm", "-f", "dka")
    # run -it: the CLI's create, attach (with the keys), start
    t = api.terminal("run", "-it", "--detach-keys", "ctrl-a", "--name", "dkr",
                     "--network", "none", "busybox", "cat")
    try:
        time.sleep(0.3)
        t.send(b"three\r")
        t.expect(b"three\r\n")
        t.send(b"\x01")
        t.wait()
    finally:
        t.close()
    assert _running(api, "dkr")
    api.docker("rm", "-f", "dkr")
