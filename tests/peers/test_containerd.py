"""containerd 1.6 + ctr with cove-runtime behind containerd-shim-runc-v2 (`--runc-binary`:
the same shim and runtime calls kubelet's CRI path makes)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.lib.daemons import CTR_NAMESPACE, Containerd
from tests.lib.peers import IMAGE_REF, finish, need, sh
from tests.lib.terminal import PtySession
from tests.lib.wait import wait_for

pytestmark = pytest.mark.peers

NS = CTR_NAMESPACE


@pytest.fixture(scope="module")
def ctd(image_tar: str) -> Iterator[Containerd]:
    need("containerd")
    need("ctr")
    need("containerd-shim-runc-v2")
    c = Containerd()
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


def test_run_rm(ctd: Containerd) -> None:
    r = ctd("run", "--rm", *ctd.run_args(), IMAGE_REF, "peerc-rm", "sh", "-c",
            "echo hi; exit 0")
    assert r.stdout == "hi\n", r.stderr
    # The exit status comes back through the shim.
    r = ctd("run", "--rm", *ctd.run_args(), IMAGE_REF, "peerc-rm2", "sh", "-c", "exit 9",
            check=False)
    assert r.returncode == 9, r.stderr
    assert ctd("container", "ls", "-q").stdout.strip() == ""
    ctd.check_clean(["peerc-rm", "peerc-rm2"])


def test_run_tty_on_a_pty(ctd: Containerd) -> None:
    """`ctr run -t`: the shim hands cove-runtime a --console-socket for the init."""
    s = PtySession(ctd.ctr_argv("run", "-t", "--rm", *ctd.run_args(), IMAGE_REF,
                                "peerc-tty", "sh"))
    s.expect(b"# ")
    s.send(b"tty; echo MARK$((6*7))\r")
    out = s.expect(b"MARK42")
    assert b"/dev/pts/" in out
    s.send(b"exit 5\r")
    assert s.wait() == 5
    ctd.check_clean(["peerc-tty"])


def test_task_exec_ps_pause_resume_kill(ctd: Containerd) -> None:
    cid = "peerc-task"
    ctd("run", "-d", *ctd.run_args(), IMAGE_REF, cid, "sh", "-c",
        'trap "exit 0" TERM; while :; do sleep 0.1; done')
    try:
        wait_for(lambda: ctd.task_status(cid) == "RUNNING", what="task RUNNING")
        # The runtime kept its state under --runc-root/<namespace>, as runc does.
        assert os.path.exists(os.path.join(ctd.cove_root, NS, cid, "state.json"))

        r = ctd("task", "exec", "--exec-id", "peere1", cid, "sh", "-c",
                "echo in-exec; exit 4", check=False)
        assert r.returncode == 4, r.stderr + ctd.runtime_log(cid)
        assert r.stdout == "in-exec\n"

        # exec with a terminal needs ctr itself on a terminal: run it on a pty.
        s = PtySession(ctd.ctr_argv("task", "exec", "-t", "--exec-id", "peere2", cid, "tty"))
        s.expect(b"/dev/pts/")
        assert s.wait() == 0

        # ps: the shim calls `ps --format json` and expects the pids in the container.
        ps = ctd("task", "ps", cid).stdout.split("\n", 1)[1].split()
        pids = [int(x) for x in ps if x.isdigit()]
        init = int(ctd("task", "ls").stdout.split(cid, 1)[1].split()[0])
        assert init in pids, ps

        ctd("task", "pause", cid)
        assert ctd.task_status(cid) == "PAUSED"
        freezer = f"/sys/fs/cgroup/freezer/{NS}/{cid}/freezer.state"
        if os.path.exists(freezer):
            with open(freezer) as f:
                assert f.read().strip() == "FROZEN"
        ctd("task", "resume", cid)
        assert ctd.task_status(cid) == "RUNNING"
        r = ctd("task", "exec", "--exec-id", "peere3", cid, "echo", "after-resume")
        assert r.stdout == "after-resume\n"

        # kill: the shim calls `kill ID 15` (pid 1 only dies of it through the trap).
        t0 = time.monotonic()
        ctd("task", "kill", cid)
        wait_for(lambda: ctd.task_status(cid) == "STOPPED", what="task STOPPED")
        assert time.monotonic() - t0 < 10
        ctd("task", "rm", cid)
        assert "error" not in ctd.runtime_log(cid), ctd.runtime_log(cid)
    finally:
        ctd.remove(cid)
    ctd.check_clean([cid])


def test_kill_all_and_exec_after_exit(ctd: Containerd) -> None:
    """`ctr task kill --all` -> `kill --all ID 9`: every process of the container."""
    cid = "peerc-all"
    ctd("run", "-d", *ctd.run_args(), IMAGE_REF, cid, "sh", "-c",
        "sleep 1000 & sleep 1000 & wait")
    try:
        wait_for(lambda: ctd.task_status(cid) == "RUNNING", what="task RUNNING")
        wait_for(lambda: len(json.loads(sh([ctd.runtime, "--root", os.path.join(
            ctd.cove_root, NS), "ps", "--format", "json", cid]).stdout)) == 3,
            what="three processes")
        ctd("task", "kill", "--all", "-s", "SIGKILL", cid)
        wait_for(lambda: ctd.task_status(cid) == "STOPPED", what="task STOPPED")
        # exec into a stopped task is refused with the runtime's message.
        r = ctd("task", "exec", "--exec-id", "peere4", cid, "true", check=False)
        assert r.returncode != 0
        ctd("task", "rm", cid)
    finally:
        ctd.remove(cid)
    ctd.check_clean([cid])
