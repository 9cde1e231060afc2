"""dockerd 20.10 with cove-runtime registered as a runtime (daemon.json `runtimes`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.lib.daemons import Docker
from tests.lib.peers import DOCKER_IMAGE, finish, need
from tests.lib.wait import wait_for

pytestmark = pytest.mark.peers

IMAGE = DOCKER_IMAGE


@pytest.fixture(scope="module")
def docker(image_tar: str) -> Iterator[Docker]:
    need("dockerd")
    need("/usr/bin/docker")
    d = Docker()
    try:
        d.start(["dockerd", "--config-file", d.path("daemon.json")], ready=d.ready,
                env={**os.environ, "TMPDIR": d.path("tmp")}, timeout=60)
        d("load", "-i", image_tar)
        d.mark_baseline()
        yield d
        d("rm", "-f", *d("ps", "-aq").stdout.split(), check=False)
    finally:
        finish(d)


def test_info_sees_the_runtime(docker: Docker) -> None:
    # `docker info` runs `cove-runtime --version` and parses its `commit:` line.
    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    assert "cove" in info["Runtimes"]
    docker.check_clean()


def test_run(docker: Docker) -> None:
    r = docker("run", "--rm", "--runtime", "cove", "--name", "peerdk-rm", IMAGE,
               "sh", "-c", "echo hi; cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.stdout.splitlines() == ["hi", "sh -c echo hi; cat /proc/1/cmdline | tr '\\0' ' ' "]
    r = docker("run", "--rm", "--runtime", "cove", IMAGE, "sh", "-c", "exit 6", check=False)
    assert r.returncode == 6, r.stderr
    # A non-root user (init opens the exec fifo after dropping privileges) and
    # resources given at create time.
    r = docker("run", "--rm", "--runtime", "cove", "-u", "1000:1000", "--memory", "32m",
               "--pids-limit", "50", IMAGE, "sh", "-c",
               "id -u; cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
               "/sys/fs/cgroup/pids/pids.max")
    assert r.stdout.splitlines() == ["1000", str(32 << 20), "50"]
    docker.check_clean()


def test_exec_top_update_stop(docker: Docker) -> None:
    name = "peerdk-d"
    cid = docker("run", "-d", "--runtime", "cove", "--name", name, IMAGE, "sh", "-c",
                 'trap "exit 0" TERM; while :; do sleep 0.1; done').stdout.strip()
    try:
        assert docker("inspect", "-f", "{{.HostConfig.Runtime}}", name).stdout.strip() == "cove"
        r = docker("exec", name, "sh", "-c", "echo in-exec; tty; exit 3", check=False)
        assert r.returncode == 3, r.stderr
        assert r.stdout.splitlines() == ["in-exec", "not a tty"]
        r = docker("exec", "-t", name, "tty")
        assert r.stdout.strip().startswith("/dev/pts/"), r.stdout

        # top: the shim calls `ps --format json`; docker runs ps(1) and filters.
        top = docker("top", name).stdout
        assert "while :; do sleep 0.1; done" in top, top

        # update: `update --resources - ID` with the new limits on stdin.
        mem = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        docker("update", "--memory", "64m", "--memory-swap", "128m", name)
        assert docker("exec", name, "cat", mem).stdout.strip() == str(64 << 20)
        host_mem = f"/sys/fs/cgroup/memory/docker/{cid}/memory.limit_in_bytes"
        with open(host_mem) as f:
            assert f.read().strip() == str(64 << 20)
        assert docker("inspect", "-f", "{{.HostConfig.Memory}}", name).stdout.strip() == \
            str(64 << 20)

        t0 = time.monotonic()
        docker("stop", "-t", "10", name)
        assert time.monotonic() - t0 < 8, "SIGTERM did not reach the container's init"
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        docker("rm", name)
    finally:
        docker("rm", "-f", name, check=False)
    wait_for(lambda: not docker("ps", "-aq").stdout.strip(), what="no containers")
    docker.check_clean([cid])
