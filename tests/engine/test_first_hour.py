"""A new user's first hour, scripted: the sequence people coming from docker run, on the
defaults they get (the default bridge network, in a network namespace the test makes),
checking every exit code and message. Each step is something two people trying Cove
actually did; several once lost work or wedged the tool.

pull -> run -it (typing, Ctrl-C, exit status) -> run -d with a published port -> logs -f
-> exec -> cp both ways -> inspect -f -> stop/rm -> save | load through a pipe -> network
and volume life cycles -> a full disk on a small tmpfs root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.store import Store
from tests.lib.engine import Cove, cove_terminal, engine_leftovers
from tests.lib.host import mounts_under
from tests.lib.images import RegistryServer
from tests.lib.paths import RUNTIME
from tests.lib.wait import wait_for


@pytest.fixture
def registry(tmp_path: Path, busybox_blobs: Store) -> Iterator[str]:
    """A registry on the host's loopback holding busybox, pushed from a seed root."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (scripts/install-deps.sh)")
    r = RegistryServer(tmp_path / "registry").start()
    seed = str(tmp_path / "seed")
    shutil.copytree(busybox_blobs.root, seed, symlinks=True)
    ref = f"{r.host}/library/busybox:1.36"
    s = Cove(seed)
    s("tag", "busybox", ref)
    s("push", ref)
    try:
        yield ref
    finally:
        r.stop()


def _clean(*roots: str) -> None:
    """Whatever a failed step left running: the sessions, containers and daemons."""
    for root in roots:
        for pid in os.listdir("/proc"):  # a session (`cove run -it`) left by a failure
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if root.encode() in f.read() and int(pid) != os.getpid():
                        os.kill(int(pid), 9)
        c = Cove(root)
        if os.path.isdir(os.path.join(root, "containers")):
            for name in os.listdir(os.path.join(root, "containers")):
                c("rm", "-f", name, check=False)
        c("supervisor", "stop", check=False)
        for m in reversed(mounts_under(root)):
            subprocess.call(["umount", "-l", m])


def test_first_hour(tmp_path: Path, netns: str, registry: str) -> None:
    root, other = str(tmp_path / "root"), str(tmp_path / "other")
    try:
        _first_hour(tmp_path, netns, registry, root, other)
    finally:
        _clean(root, other)


def _first_hour(tmp_path: Path, netns: str, ref: str, root: str, other: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(root, inns)

    # pull (from the host's loopback: the registry runs there), then it is listed
    r = Cove(root)("pull", ref)
    assert ref.rsplit(":", 1)[0] in c("images").stdout, r.stdout
    # a typo is one line, exit 125 or 1, nothing made
    r = c("run", "--rm", "busybxo", "true", check=False)
    assert r.returncode != 0 and r.stderr.startswith("cove: ") \
        and r.stderr.count("\n") == 1, r.stderr
    assert c("ps", "-a", "-q").stdout == ""

    # run -it: type, Ctrl-C a foreground command, leave with a status
    t = cove_terminal([*inns, sys.executable, "-m", "cove.cli.main", "--root", root, "run", "-it",
                       "--rm", "--name", "it1", ref, "sh"])
    t.expect(b"# ")
    t.send(b"echo $((6*7))\r")
    t.expect(b"42\r\n")
    t.expect(b"# ")
    t.send(b"sleep 100\r")
    wait_for(lambda: "sleep 100" in c("top", "it1", check=False).stdout,
             what="sleep running")
    time.sleep(0.3)
    t.send(b"\x03")  # Ctrl-C ends sleep, not the session
    t.expect(b"# ")
    t.send(b"exit 3\r")
    assert t.wait() == 3
    assert c("ps", "-a", "-q").stdout == ""  # --rm: gone

    # a detached web server on the default network, with a published port
    cid = c("run", "-d", "--name", "web", "-p", "18090:80", ref, "sh", "-c",
            "mkdir -p /www && echo hello > /www/index.html && "
            "echo started && exec httpd -f -v -p 80 -h /www").stdout.strip()
    assert len(cid) == 64

    def get() -> str:
        try:
            return subprocess.run([*inns, "busybox", "wget", "-qO-",
                                   "http://127.0.0.1:18090/"],
                                  capture_output=True, text=True, timeout=3).stdout
        except subprocess.TimeoutExpired:
            return ""
    wait_for(lambda: get() == "hello\n", timeout=10, what="the published port")

    # logs -f: follows until stopped by the user
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    f = subprocess.Popen([*inns, sys.executable, "-m", "cove.cli.main", "--root", root,
                          "logs", "-f", "web"], stdout=subprocess.PIPE, text=True, env=env)
    assert f.stdout is not None
    assert f.stdout.readline() == "started\n"
    f.terminate()
    f.wait(5)

    # exec, cp both ways, inspect -f
    assert c("exec", "web", "cat", "/www/index.html").stdout == "hello\n"
    r = c("exec", "web", "nosuchcmd", check=False)
    assert r.returncode == 127, (r.returncode, r.stderr)
    (tmp_path / "page.html").write_text("from the host\n")
    c("cp", str(tmp_path / "page.html"), "web:/www/page.html")
    wait_for(lambda: subprocess.run([*inns, "busybox", "wget", "-qO-",
                                     "http://127.0.0.1:18090/page.html"],
                                    capture_output=True, text=True,
                                    timeout=5).stdout == "from the host\n", what="cp in")
    c("cp", "web:/www/index.html", str(tmp_path / "back.html"))
    assert (tmp_path / "back.html").read_text() == "hello\n"
    assert c("inspect", "-f", "{{.State.Status}}", "web").stdout == "running\n"
    ip = c("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web").stdout.strip()
    assert ip.count(".") == 3

    # stop and rm: names echoed, exit 0, port closed
    # (httpd as pid 1 has no TERM handler: the kernel ignores it, so SIGKILL after -t)
    assert c("stop", "-t", "1", "web").stdout == "web\n"
    assert c("inspect", "-f", "{{.State.ExitCode}}", "web").stdout == "137\n"
    assert c("rm", "web").stdout == "web\n"
    wait_for(lambda: get() == "", timeout=5, what="port unpublished")
    r = c("rm", "web", check=False)
    assert r.returncode == 1 and "no such container" in r.stderr.lower(), r.stderr

    # save | load through a pipe into another root: same image ID, runs
    saved = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", root, "save",
                              ref], stdout=subprocess.PIPE, env=env)
    load = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", other, "load"],
                          stdin=saved.stdout, capture_output=True, text=True, env=env)
    assert saved.wait(30) == 0 and load.returncode == 0, load.stderr
    ids = [json.loads(Cove(x)("inspect", "--type", "image", ref).stdout)[0]["Id"]
           for x in (root, other)]
    assert ids[0] == ids[1]
    assert Cove(other)("run", "--rm", "--network", "none", ref, "echo", "ok").stdout == "ok\n"

    # networks and volumes
    c("network", "create", "app")
    assert "app" in c("network", "ls").stdout
    c("volume", "create", "data")
    c("run", "--rm", "--network", "app", "-v", "data:/data", ref, "sh", "-c",
      "echo kept > /data/f")
    assert c("run", "--rm", "--network", "app", "-v", "data:/data", ref, "cat",
             "/data/f").stdout == "kept\n"
    r = c("volume", "rm", "nosuch", check=False)
    assert r.returncode == 1 and r.stderr.startswith("cove: "), r.stderr
    c("volume", "rm", "data")
    c("network", "rm", "app")
    assert "app" not in c("network", "ls").stdout
    c("supervisor", "stop")
    Cove(other)("supervisor", "stop")
    for x in (root, other):
        assert not engine_leftovers(x) and not mounts_under(x)


def test_first_hour_full_disk(tmp_path: Path, busybox_blobs: Store) -> None:
    """The tool stays usable when a container fills the disk the state root is on."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True)
    root = str(mnt / "root")
    try:
        shutil.copytree(busybox_blobs.root, root, symlinks=True)
        c = Cove(root)
        c("run", "-d", "--name", "fill", "--network", "none", "busybox", "sh", "-c",
          "dd if=/dev/zero of=/big bs=1M count=100; echo full; sleep 1000")
        wait_for(lambda: shutil.disk_usage(root).free < 64 * 1024, timeout=20,
                 what="a full disk")
        assert "fill" in c("ps").stdout
        r = c("run", "--rm", "--network", "none", "busybox", "true", check=False)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 \
            and "no space left" in r.stderr.lower(), r.stderr
        assert c("rm", "-f", "fill").stdout == "fill\n"
        assert c("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
        c("supervisor", "stop")
        assert not engine_leftovers(root) and not mounts_under(root)
    finally:
        for m in reversed(mounts_under(str(mnt))):
            subprocess.call(["umount", "-l", m])
        subprocess.call(["umount", "-l", str(mnt)])
