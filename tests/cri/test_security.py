"""critest's security-context and namespace cases: run-as-user/group, read-only root,
capabilities, seccomp, no_new_privs, privileged, host namespaces; `cove` beside `runc`."""

from __future__ import annotations

import os

import pytest
from cri_api.v1 import api_pb2 as pb

from tests.lib.cri import CriNode
from tests.lib.cripods import run_to_end, status_field
from tests.lib.kubelet import NODE, Kubelet

pytestmark = pytest.mark.peers

HANDLERS = ["runc", "cove"]


@pytest.mark.parametrize("handler", HANDLERS)
def test_security_context(kubelet: Kubelet, handler: str) -> None:
    pod = kubelet.run_pod(handler, f"sec-{handler}")
    S = pb.LinuxContainerSecurityContext
    # run-as-user / group, supplemental groups
    code, out = run_to_end(kubelet, pod, "user", "id -u; id -g; id -G",
                           security=S(run_as_user=pb.Int64Value(value=1000),
                                      run_as_group=pb.Int64Value(value=2000),
                                      supplemental_groups=[3000]))
    assert code == 0 and out[:2] == ["1000", "2000"] and "3000" in out[2].split(), out
    # read-only root filesystem
    code, out = run_to_end(kubelet, pod, "ro", "touch /x 2>&1; echo rc=$?",
                           security=S(readonly_rootfs=True))
    assert "Read-only file system" in out[0] and out[1] == "rc=1", out
    # capabilities: add NET_ADMIN (bit 12), drop CHOWN (bit 0)
    code, out = run_to_end(kubelet, pod, "caps",
                           "grep CapEff /proc/self/status; chown 1 /tmp 2>&1; echo rc=$?",
                           security=S(capabilities=pb.Capability(
                               add_capabilities=["NET_ADMIN"],
                               drop_capabilities=["CHOWN"])))
    eff = int(status_field(out[0], "CapEff"), 16)
    assert eff & (1 << 12) and not eff & 1, out
    assert out[-1] == "rc=1", out
    # drop ALL
    code, out = run_to_end(kubelet, pod, "nocaps", "grep CapEff /proc/self/status",
                           security=S(capabilities=pb.Capability(drop_capabilities=["ALL"])))
    assert int(status_field(out[0], "CapEff"), 16) == 0, out
    # seccomp RuntimeDefault: a filter is on; containerd's profile refuses unshare
    # without CAP_SYS_ADMIN
    code, out = run_to_end(
        kubelet, pod, "seccomp", "grep Seccomp: /proc/self/status; unshare -u true; "
        "echo rc=$?",
        security=S(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)))
    assert status_field(out[0], "Seccomp") == "2" and out[-1] == "rc=1", out
    code, out = run_to_end(
        kubelet, pod, "unconfined", "grep Seccomp: /proc/self/status",
        security=S(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)))
    assert status_field(out[0], "Seccomp") == "0", out
    # no_new_privs, masked and read-only paths (kubelet's defaults)
    code, out = run_to_end(kubelet, pod, "nnp",
                           "grep NoNewPrivs /proc/self/status; cat /proc/version | wc -c; "
                           "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; echo rc=$?",
                           security=S(no_new_privs=True, masked_paths=["/proc/version"],
                                      readonly_paths=["/proc/sys"]))
    assert status_field(out[0], "NoNewPrivs") == "1" and out[1:] == ["0", "rc=1"], out
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_privileged(kubelet: Kubelet, handler: str) -> None:
    cfg_pod = kubelet.run_pod(handler, f"priv-{handler}", privileged=True)
    _code, out = run_to_end(kubelet, cfg_pod, "p", "grep CapEff /proc/self/status; "
                           "mount -t tmpfs none /tmp 2>&1 && echo mounted",
                           security=pb.LinuxContainerSecurityContext(privileged=True))
    assert out[-1] == "mounted", out
    assert int(status_field(out[0], "CapEff"), 16) >= (1 << 38) - 1, out
    kubelet.remove_pod(cfg_pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_host_network_and_pid(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    """A host-network pod sees the node's interfaces (here: containerd's network
    namespace, with the CNI bridge); a host-pid pod sees the node's processes."""
    pod = kubelet.run_pod(handler, f"hostns-{handler}", network=NODE, pid=NODE)
    # The network namespace by its inode (the CNI bridge exists only after a first
    # CNI pod); this node's containerd by its config path (other tests' may be running).
    netns = os.stat(f"/run/netns/{node.netns}").st_ino
    conf = node.path("config.toml")
    _code, out = run_to_end(kubelet, pod, "c", "readlink /proc/self/ns/net; "
                           f"ps -o args | grep -c '[c]ontainerd --config {conf}'")
    assert out == [f"net:[{netns}]", "1"], out
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_seccomp_localhost_profile(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    """A node-local profile (`localhost/...`): containerd reads it, the runtime loads it."""
    import json

    profile = node.path(f"no-mkdir-{handler}.json")
    with open(profile, "w") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}, f)
    pod = kubelet.run_pod(handler, f"seccomp-local-{handler}")
    _code, out = run_to_end(
        kubelet, pod, "c", "mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touched",
        security=pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
            profile_type=pb.SecurityProfile.Localhost, localhost_ref=profile)))
    assert "Operation not permitted" in out[0] and out[1:] == ["rc=1", "touched"], out
    kubelet.remove_pod(pod.id)
    os.unlink(profile)


@pytest.mark.parametrize("handler", HANDLERS)
def test_host_ipc(kubelet: Kubelet, handler: str) -> None:
    """hostIPC: the node's System V shared memory is the container's."""
    import subprocess

    made = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True)
    shmid = made.stdout.split()[-1]
    try:
        pod = kubelet.run_pod(handler, f"hostipc-{handler}", ipc=NODE)
        _code, out = run_to_end(kubelet, pod, "c", "cat /proc/sysvipc/shm")
        assert any(line.split()[1:2] == [shmid] for line in out if line.split()), out
        kubelet.remove_pod(pod.id)
        pod = kubelet.run_pod(handler, f"podipc-{handler}")
        _code, out = run_to_end(kubelet, pod, "c", "cat /proc/sysvipc/shm")
        assert not any(line.split()[1:2] == [shmid] for line in out if line.split()), out
        kubelet.remove_pod(pod.id)
    finally:
        subprocess.run(["ipcrm", "-m", shmid], capture_output=True)
