"""Exec and Attach through containerd's streaming server, resources and their update,
stats, log reopening: `cove` beside `runc`."""

from __future__ import annotations

import os
import time

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.lib.cri import BUSYBOX_REF, CriNode, netns_socket
from tests.lib.cristream import STDERR, STDIN, STDOUT, Stream, exit_code
from tests.lib.kubelet import RUNNING, Kubelet

pytestmark = pytest.mark.peers

HANDLERS = ["runc", "cove"]
GVISOR = pytest.param("cove-gvisor", marks=pytest.mark.skipif(
    not os.path.exists("/usr/bin/runsc"), reason="runsc is not installed"))


def stream(node: CriNode, url: str) -> Stream:
    return Stream(netns_socket(node.netns), url)


@pytest.mark.parametrize("handler", [*HANDLERS, GVISOR])
def test_exec_and_attach_streams(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    pod = kubelet.run_pod(handler, f"stream-{handler}")
    cid = kubelet.run(pod, "sh", BUSYBOX_REF, ["sh"], stdin=True)
    kubelet.wait_state(cid, RUNNING)

    # exec, no tty: stdout and stderr apart, the exit code in the status message
    s = stream(node, kubelet.exec_url(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    st = s.wait()
    assert (s.out[STDOUT], s.out[STDERR]) == (b"out\n", b"err\n")
    assert exit_code(st) == 3, st

    # exec with a tty and stdin: an interactive shell
    s = stream(node, kubelet.exec_url(cid, ["sh"], tty=True, stdin=True))
    s.send(STDIN, b"[ -t 0 ] && echo IS-$((6*7)); exit 4\r")
    s.read_until(b"IS-42")  # (gVisor's `tty` cannot name its pty: "not a tty")
    st = s.wait()
    assert exit_code(st) == 4, (s.out, st)

    # attach to the container's own stdin/stdout (its `sh`)
    s = stream(node, kubelet.attach_url(cid, stdin=True))
    s.send(STDIN, b"echo attached-$((2+3))\n")
    s.read_until(b"attached-5")
    s.send(STDIN, b"exit 6\n")
    s.wait()
    assert kubelet.wait_state(cid, pb.CONTAINER_EXITED).exit_code == 6
    assert "attached-5" in kubelet.stdout_of(pod, "sh")
    kubelet.remove_pod(pod.id)


def cgroup_file(node: CriNode, pod_cgroup: str, cid: str, ctrl: str, name: str) -> str:
    with open(os.path.join("/sys/fs/cgroup", ctrl, pod_cgroup.lstrip("/"), cid, name)) as f:
        return f.read().strip()


@pytest.mark.parametrize("handler", HANDLERS)
def test_resources_update_stats(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    pod = kubelet.run_pod(handler, f"res-{handler}")
    res = pb.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                     memory_limit_in_bytes=64 << 20)
    cid = kubelet.run(pod, "c", BUSYBOX_REF, ["sh", "-c",
                      "head -c 8000000 /dev/zero > /tmp/f; while :; do :; done"],
                      resources=res)
    kubelet.wait_state(cid, RUNNING)
    cg = pod.config.linux.cgroup_parent
    assert cgroup_file(node, cg, cid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_file(node, cg, cid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(node, cg, cid, "cpu", "cpu.shares") == "512"
    # what the container sees of its limits
    r = kubelet.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    assert r.stdout.decode().strip() == str(64 << 20), r

    kubelet.update(cid, pb.LinuxContainerResources(cpu_period=100000, cpu_quota=20000,
                                                   cpu_shares=256,
                                                   memory_limit_in_bytes=96 << 20))
    assert cgroup_file(node, cg, cid, "memory", "memory.limit_in_bytes") == str(96 << 20)
    assert cgroup_file(node, cg, cid, "cpu", "cpu.cfs_quota_us") == "20000"
    assert kubelet.status_of(cid).resources.linux.memory_limit_in_bytes == 96 << 20

    time.sleep(0.3)  # some cpu time to see
    st = kubelet.stats(cid)
    assert st.attributes.id == cid
    assert st.cpu.usage_core_nano_seconds.value > 0
    assert st.memory.working_set_bytes.value > 0
    # (the writable layer's bytes come from containerd's snapshot walk every 10 s)
    assert st.writable_layer.fs_id.mountpoint.endswith("overlayfs")
    listed = kubelet.rt.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=pod.id))).stats
    assert [s.attributes.id for s in listed] == [cid]
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", [*HANDLERS, GVISOR])
def test_reopen_container_log(kubelet: Kubelet, handler: str) -> None:
    """Kubelet's log rotation: rename the file, ReopenContainerLog, new lines go to a
    new file at the old path."""
    pod = kubelet.run_pod(handler, f"logs-{handler}")
    cid = kubelet.run(pod, "c", BUSYBOX_REF, ["sh", "-c",
                      "i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.05; done"])
    kubelet.wait_log(pod, "c", "line-3")
    path = kubelet.log_path(pod, "c")
    os.rename(path, path + ".1")
    kubelet.reopen_log(cid)
    kubelet.wait_log(pod, "c", "line-")
    with open(path + ".1") as f:
        old = f.read()
    new = kubelet.stdout_of(pod, "c")
    assert int(new[0].split("-")[1]) > int(old.splitlines()[-1].rsplit("-")[-1])
    kubelet.remove_pod(pod.id)
