"""containerd 1.6 with cove-runtime behind containerd-shim-runc-v2: `ctr container
checkpoint --task --rw` of a running task (the shim calls `cove-runtime checkpoint
--image-path --work-path`), the container removed, then `ctr container restore --rw
--live` from the checkpoint image (the shim calls `cove-runtime restore --detach
--bundle --pid-file`): the task runs on from where it was.

Runs where CRIU works (the 6.1-kernel VM: tests/criu/test_in_vm.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.lib.criu import criu_broken
from tests.lib.daemons import Containerd
from tests.lib.peers import IMAGE_REF, finish, need
from tests.lib.wait import wait_for

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(bool(criu_broken()), reason=criu_broken() or "ok")]


@pytest.fixture
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
        for ref in c("images", "ls", "-q").stdout.split():
            if ref.startswith("localhost/ckpt"):
                c("images", "rm", ref, check=False)
    finally:
        finish(c)


def _n(c: Containerd, cid: str) -> int:
    return int(c("task", "exec", "--exec-id", f"e{time.monotonic_ns()}", cid,
                 "cat", "/n").stdout.strip() or "0")


def test_ctr_checkpoint_restore(ctd: Containerd) -> None:
    cid = "ckpt-ctr"
    ctd("run", "-d", *ctd.run_args(), IMAGE_REF, cid, "sh", "-c",
        "i=0; while :; do echo $i > /n; i=$((i+1)); sleep 0.1; done")
    wait_for(lambda: ctd.task_status(cid) == "RUNNING", what="task RUNNING")
    wait_for(lambda: _n(ctd, cid) >= 3, timeout=60, what="counting")
    r = ctd("container", "checkpoint", "--task", "--rw", cid, "localhost/ckpt:1",
            check=False, timeout=300)
    assert r.returncode == 0, r.stderr + ctd.runtime_log(cid)
    at = _n(ctd, cid)
    ctd.remove(cid)
    r = ctd("container", "restore", "--rw", "--live", cid, "localhost/ckpt:1",
            check=False, timeout=300)
    assert r.returncode == 0, r.stderr + ctd.runtime_log(cid)
    wait_for(lambda: ctd.task_status(cid) == "RUNNING", what="restored task RUNNING")
    first = _n(ctd, cid)
    wait_for(lambda: _n(ctd, cid) > first + 2, timeout=60, what="counting on")
    assert first >= 3 and first <= at + 50, (first, at)  # from the checkpoint, not 0
    ctd.remove(cid)
    ctd.check_clean([cid])
