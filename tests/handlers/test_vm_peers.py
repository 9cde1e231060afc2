"""podman and containerd (ctr) running containers through cove-runtime-vm."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cove.handlers.vm import qemu
from tests.lib.daemons import Containerd, Podman
from tests.lib.handlers import VM_RUNTIME, no_qemu_left
from tests.lib.peers import IMAGE_REF, finish, need
from tests.lib.terminal import PtySession

pytestmark = [pytest.mark.peers, pytest.mark.slow,
              pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))]


@pytest.fixture
def podman_vm(image_tar: str) -> Iterator[Podman]:
    need("/usr/bin/podman")
    need("conmon")
    p = Podman()
    conf = p.path("containers.conf")
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace(f'["{p.runtime}"]', f'["{VM_RUNTIME}"]'))
    try:
        p("load", "-i", image_tar)
        p.mark_baseline()
        yield p
        p("rm", "-af", check=False)
        p("rmi", "-af", check=False)
        p("system", "reset", "-f", check=False, timeout=60)
    finally:
        finish(p)


def test_podman_run_rm_echo_in_vm(podman_vm: Podman) -> None:
    r = podman_vm("run", "--rm", IMAGE_REF, "sh", "-c", "echo hi; uname -r", timeout=180)
    assert r.stdout.splitlines()[0] == "hi"
    assert r.stdout.splitlines()[1] != os.uname().release  # the guest's kernel
    assert podman_vm("ps", "-aq").stdout.strip() == ""
    assert not no_qemu_left()


def test_podman_run_it_in_vm(podman_vm: Podman) -> None:
    """`podman run -it`: conmon hands cove-runtime-vm a --console-socket for the init;
    `podman exec -t` one for an exec (`exec --detach --tty --console-socket`)."""
    s = PtySession([podman_vm.bin, "run", "-it", "--rm", "--name", "peervm-it", IMAGE_REF,
                    "sh"], env=podman_vm.env)
    s.expect(b"# ", timeout=180)
    s.send(b"tty; echo MARK$((6*7))\r")
    out = s.expect(b"MARK42", timeout=60)
    assert b"/dev/pts/" in out
    r = podman_vm("exec", "-t", "peervm-it", "sh", "-c", "tty; exit 4", check=False,
                  timeout=90)
    assert r.returncode == 4, r.stderr
    assert r.stdout.startswith("/dev/pts/"), r.stdout
    s.send(b"exit 3\r")
    assert s.wait(timeout=60) == 3
    assert podman_vm("ps", "-aq").stdout.strip() == ""
    assert not no_qemu_left()


@pytest.fixture
def ctd_vm(image_tar: str) -> Iterator[Containerd]:
    need("containerd")
    need("ctr")
    need("containerd-shim-runc-v2")
    c = Containerd()
    c.runtime = VM_RUNTIME
    try:
        c.start(["containerd", "--config", c.path("config.toml")],
                ready=lambda: os.path.exists(c.sock))
        c("images", "import", image_tar)
        c.mark_baseline()
        yield c
        for cid in c("container", "ls", "-q").stdout.split():
            c.remove(cid)
    finally:
        finish(c)


def test_ctr_run_in_vm(ctd_vm: Containerd) -> None:
    r = ctd_vm("run", "--rm", *ctd_vm.run_args(), IMAGE_REF, "peervm-rm", "sh", "-c",
               "echo hi; exit 9", check=False, timeout=180)
    assert r.returncode == 9, r.stderr
    assert r.stdout == "hi\n", r.stderr
    assert ctd_vm("container", "ls", "-q").stdout.strip() == ""
    assert not no_qemu_left()


def test_ctr_run_tty_in_vm(ctd_vm: Containerd) -> None:
    """`ctr run -t`: the shim hands cove-runtime-vm a --console-socket for the init."""
    s = PtySession(ctd_vm.ctr_argv("run", "-t", "--rm", *ctd_vm.run_args(), IMAGE_REF,
                                   "peervm-tty", "sh"))
    s.expect(b"# ", timeout=180)
    s.send(b"tty; echo MARK$((6*7))\r")
    out = s.expect(b"MARK42", timeout=60)
    assert b"/dev/pts/" in out
    s.send(b"exit 5\r")
    assert s.wait(timeout=60) == 5
    assert ctd_vm("container", "ls", "-q").stdout.strip() == ""
    assert not no_qemu_left()
