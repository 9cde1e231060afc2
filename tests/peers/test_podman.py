"""podman 4.3 (through conmon) with cove-runtime as its OCI runtime."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.peerlib import IMAGE_REF, Peer, PtySession, finish, need, sh

pytestmark = pytest.mark.peers


class Podman(Peer):
    def __init__(self) -> None:
        super().__init__("podman", ["libpod_parent"],
                         # podman keeps its blob-info cache here whatever graphroot says.
                         ["/var/lib/containers", "/run/containers", "/run/libpod"])
        self.bin = "/usr/bin/podman"
        T = self.dir
        for d in ("tmp", "networks", "volumes"):
            os.makedirs(self.path(d))
        with open(self.path("containers.conf"), "w") as f:
            f.write(f"""[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_config_dir = "{T}/networks"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{T}/events.log"
tmp_dir = "{T}/tmp"
volume_path = "{T}/volumes"
runtime = "cove"
[engine.runtimes]
cove = ["{self.runtime}"]
""")
        with open(self.path("storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{T}/storage"\n'
                    f'runroot = "{T}/run"\n')
        with open(self.path("registries.conf"), "w") as f:
            f.write("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": self.path("containers.conf"),
                    "CONTAINERS_STORAGE_CONF": self.path("storage.conf"),
                    "CONTAINERS_REGISTRIES_CONF": self.path("registries.conf")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh([self.bin, *args], env=self.env, check=check, timeout=timeout, input=input)


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
    s.read_until(b"# ")
    s.send(b"tty; stty size; echo MARK$((6*7))\r")
    out = s.read_until(b"MARK42")
    assert b"/dev/pts/" in out
    s.send(b"exit 3\r")
    assert s.wait() == 3
    podman.check_clean([cid_from(podman, "cid-it")])
