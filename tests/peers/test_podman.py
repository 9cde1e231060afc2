"""podman 4.3 (through conmon) with cove-runtime as its OCI runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.lib.daemons import Podman
from tests.lib.peers import IMAGE_REF, finish, need
from tests.lib.terminal import PtySession

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def podman(image_tar: str) -> Iterator[Podman]:
    need("/usr/bin/podman")
    need("conmon")
    p = Podman()
    try:
        p("load", "-i", image_tar)
        p.mark_baseline()
        yield p
        # Remove what podman itself keeps (containers, the image, storage mounts).
        p("rm", "-af", check=False)
        p("rmi", "-af", check=False)
        p("system", "reset", "-f", check=False, timeout=60)
    finally:
        finish(p)


def cid_from(p: Podman, name: str) -> str:
    with open(p.path(name)) as f:
        return f.read().strip()


def test_run_rm_echo(podman: Podman) -> None:
    r = podman("run", "--rm", "--cidfile", podman.path("cid-rm"), IMAGE_REF, "echo", "hi")
    assert r.stdout == "hi\n"
    assert podman("ps", "-aq").stdout.strip() == ""
    podman.check_clean([cid_from(podman, "cid-rm")])


def test_detached_logs_exec_stop_rm(podman: Podman) -> None:
    name = "peerpod-d"
    podman("run", "-d", "--name", name, IMAGE_REF, "sh", "-c",
           'echo started; trap "exit 7" TERM; while :; do sleep 0.1; done')
    cid = podman("inspect", "-f", "{{.Id}}", name).stdout.strip()
    try:
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running"
        # It is cove-runtime that runs it: podman passes no --root, so the default one.
        assert os.path.exists(f"/run/cove-runtime/{cid}/state.json")
        logs = podman("logs", name)
        deadline = time.monotonic() + 10
        while "started" not in logs.stdout and time.monotonic() < deadline:
            time.sleep(0.1)
            logs = podman("logs", name)
        assert "started" in logs.stdout

        # exec without a terminal: stdout, exit status, no tty.
        r = podman("exec", name, "sh", "-c", "echo out-$((2+3)); tty; exit 5", check=False)
        assert r.returncode == 5, r.stderr
        assert r.stdout.splitlines() == ["out-5", "not a tty"]
        # stdin reaches the process (-i).
        r = podman("exec", "-i", name, "cat", input="through stdin\n")
        assert r.stdout == "through stdin\n"
        # exec with a terminal (conmon gets the pty master over --console-socket).
        r = podman("exec", "-t", name, "tty")
        assert r.stdout.strip().startswith("/dev/pts/"), r.stdout
        # exec as another user, in another directory, with extra environment.
        r = podman("exec", "-u", "1:1", "-w", "/tmp", "-e", "PEER=x", name, "sh", "-c",
                   "id -u; pwd; echo $PEER")
        assert r.stdout.splitlines() == ["1", "/tmp", "x"]
        # pause/unpause: the runtime's freezer.
        podman("pause", name)
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "paused"
        podman("unpause", name)
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running"
        # The exec'd processes are gone; the container's init is still pid 1.
        top = podman("exec", name, "ps", "-o", "pid,comm").stdout
        assert " 1 sh" in top or "1 sh" in top.split("\n", 1)[1], top

        t0 = time.monotonic()
        podman("stop", "-t", "10", name)
        assert time.monotonic() - t0 < 8, "SIGTERM did not reach the container's init"
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "7"
        podman("rm", name)
        assert podman("ps", "-aq").stdout.strip() == ""
    finally:
        podman("rm", "-f", name, check=False)
    podman.check_clean([cid])


def test_run_as_user_read_only(podman: Podman) -> None:
    r = podman("run", "--rm", "--cidfile", podman.path("cid-user"), "-u", "1000:1000",
               "--read-only", IMAGE_REF, "sh", "-c", "id -u; touch /x 2>/dev/null || echo ro")
    assert r.stdout.splitlines() == ["1000", "ro"]
    podman.check_clean([cid_from(podman, "cid-user")])


def test_run_it_on_a_pty(podman: Podman) -> None:
    s = PtySession([podman.bin, "run", "-it", "--rm", "--cidfile", podman.path("cid-it"),
                    "--name", "peerpod-it", IMAGE_REF, "sh"], env=podman.env)
    s.expect(b"# ")
    s.send(b"tty; stty size; echo MARK$((6*7))\r")
    out = s.expect(b"MARK42")
    assert b"/dev/pts/" in out
    s.send(b"exit 3\r")
    assert s.wait() == 3
    podman.check_clean([cid_from(podman, "cid-it")])
