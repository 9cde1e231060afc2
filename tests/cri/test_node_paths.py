"""More of what a node does through CRI: mount propagation (critest's three modes), an
OOM kill as kubelet sees it (reason OOMKilled), a host port reaching the pod through
CNI's portmap, and PortForward through the streaming server; `cove` beside `runc`."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.lib.cri import BUSYBOX_REF, CriNode, fetch, netns_socket
from tests.lib.cristream import Stream
from tests.lib.kubelet import EXITED, RUNNING, Kubelet

pytestmark = pytest.mark.peers

HANDLERS = ["runc", "cove"]


@pytest.fixture
def shared_dir(node: CriNode) -> Iterator[str]:
    """A host directory that is a shared mount (critest makes one the same way)."""
    d = node.path("logs", f"prop-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(d)
    subprocess.run(["mount", "--bind", d, d], check=True)
    subprocess.run(["mount", "--make-shared", d], check=True)
    try:
        yield d
    finally:
        for _ in range(3):
            subprocess.run(["umount", "-R", d], capture_output=True)
        shutil.rmtree(d)


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.mark.parametrize("handler", HANDLERS)
def test_mount_propagation(kubelet: Kubelet, shared_dir: str, handler: str) -> None:
    pod = kubelet.run_pod(handler, f"prop-{handler}", privileged=True)
    P = pb.MountPropagation
    cids = {}
    for name, prop in (("private", P.PROPAGATION_PRIVATE),
                       ("slave", P.PROPAGATION_HOST_TO_CONTAINER),
                       ("shared", P.PROPAGATION_BIDIRECTIONAL)):
        cids[name] = kubelet.run(
            pod, name, BUSYBOX_REF, ["sleep", "3600"],
            mounts=[pb.Mount(container_path="/mnt", host_path=shared_dir, propagation=prop)],
            security=pb.LinuxContainerSecurityContext(privileged=name == "shared"))
    for cid in cids.values():
        kubelet.wait_state(cid, RUNNING)
    # host -> container
    os.makedirs(f"{shared_dir}/fromhost", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fromhost",
                    f"{shared_dir}/fromhost"], check=True)
    with open(f"{shared_dir}/fromhost/mark", "w") as f:
        f.write("host")

    def sees(name: str, path: str) -> bool:
        r = kubelet.exec_sync(cids[name], ["sh", "-c", f"grep -q ' {path} ' /proc/self/mountinfo"])
        return r.exit_code == 0

    assert not sees("private", "/mnt/fromhost")
    assert sees("slave", "/mnt/fromhost")
    assert sees("shared", "/mnt/fromhost")
    # container -> host (bidirectional only)
    r = kubelet.exec_sync(cids["shared"], ["sh", "-c", "mkdir -p /mnt/fromctr && "
                                           "mount -t tmpfs fromctr /mnt/fromctr"])
    assert r.exit_code == 0, r
    assert mounted(f"{shared_dir}/fromctr")
    assert sees("slave", "/mnt/fromctr") and not sees("private", "/mnt/fromctr")
    subprocess.run(["umount", f"{shared_dir}/fromctr"], check=True)
    subprocess.run(["umount", f"{shared_dir}/fromhost"], check=True)
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_oom_killed(kubelet: Kubelet, handler: str) -> None:
    """Over its memory limit the container is killed by the kernel; the shim's OOM
    watch on its cgroup makes kubelet's reason OOMKilled."""
    pod = kubelet.run_pod(handler, f"oom-{handler}")
    cid = kubelet.run(pod, "hog", BUSYBOX_REF, ["sh", "-c",
                      "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
                      resources=pb.LinuxContainerResources(memory_limit_in_bytes=32 << 20,
                                                           memory_swap_limit_in_bytes=32 << 20))
    st = kubelet.wait_state(cid, EXITED)
    assert st.exit_code == 137 and st.reason == "OOMKilled", st
    assert kubelet.stdout_of(pod, "hog") == ["start"]
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_host_port_and_port_forward(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    """A hostPort (CNI portmap's DNAT in the node's namespace) and PortForward (the
    streaming server dials the pod's localhost) reach a server in the pod."""
    pod = kubelet.run_pod(handler, f"ports-{handler}",
                          ports=[pb.PortMapping(protocol=pb.TCP, container_port=8080,
                                                host_port=18081)])
    cid = kubelet.run(pod, "srv", BUSYBOX_REF, ["sh", "-c",
                      "while :; do echo served-$HOSTNAME | nc -l -p 8080; done"])
    kubelet.wait_state(cid, RUNNING)
    ip = kubelet.pod_status(pod.id).status.network.ip

    assert fetch(node, ip, 8080).startswith(b"served-")
    # portmap DNATs traffic for the host port; from the node itself, through the
    # bridge's address (the OUTPUT chain's rule)
    assert fetch(node, "10.77.0.1", 18081).startswith(b"served-")

    # PortForward: channel 0 data, 1 errors; each starts with the port (2 bytes, LE)
    # The server is a `nc -l` loop: between two clients nothing listens for a moment,
    # and containerd's dial is refused (its error on channel 1): ask again.
    for attempt in range(20):
        url = kubelet.rt.PortForward(
            pb.PortForwardRequest(pod_sandbox_id=pod.id, port=[8080]),
            timeout=kubelet.timeout).url
        s = Stream(netns_socket(node.netns), url + "?port=8080")
        s.out = {0: b"", 1: b""}
        try:
            s.read_until(b"served-", channel=0, timeout=20)
            break
        except AssertionError:
            if b"connection refused" not in s.out[1] or attempt == 19:
                raise
            time.sleep(0.1)
        finally:
            s.sock.close()
    assert s.out[0][:2] == struct.pack("<H", 8080), s.out
    kubelet.remove_pod(pod.id)
