"""The attach endpoint's `detachKeys` (docker's `--detach-keys`) through a real pty and
the docker CLI: the keys given detach (the container runs on) and the default ctrl-p
ctrl-q become plain input."""

from __future__ import annotations

import os
import time

from tests.api.conftest import Api
from tests.api.test_tty import _exit, _read_until, _spawn


def _running(api: Api, name: str) -> bool:
    return bool(api.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
                == "running")


def test_attach_and_run_with_detach_keys(api: Api) -> None:
    api.docker("run", "-dit", "--name", "dka", "--network", "none", "busybox", "cat")
    pid, fd = _spawn(api, "attach", "--detach-keys", "ctrl-x,x", "dka")
    try:
        time.sleep(0.3)
        os.write(fd, b"one\r")
        _read_until(fd, b"one\r\n")
        os.write(fd, b"\x10\x11two\r")   # not the keys now: input for the container
        _read_until(fd, b"two\r\n")
        os.write(fd, b"\x18x")
        _exit(pid, fd)
    finally:
        os.close(fd)
    assert _running(api, "dka")
    api.docker("rm", "-f", "dka")
    # run -it: the CLI's create, attach (with the keys), start
    pid, fd = _spawn(api, "run", "-it", "--detach-keys", "ctrl-a", "--name", "dkr",
                     "--network", "none", "busybox", "cat")
    try:
        time.sleep(0.3)
        os.write(fd, b"three\r")
        _read_until(fd, b"three\r\n")
        os.write(fd, b"\x01")
        _exit(pid, fd)
    finally:
        os.close(fd)
    assert _running(api, "dkr")
    api.docker("rm", "-f", "dkr")
