"""Bad requests as kubelet would make them: the error kubelet shows, and nothing left
behind (the `kubelet` fixture checks the node after each test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.lib.cri import BUSYBOX_REF, PAUSE_REF, CriNode
from tests.lib.kubelet import Kubelet, error_of

pytestmark = pytest.mark.peers


def refused(call: Callable[..., object], *args: Any, **kw: Any) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kw)
    return error_of(e.value)


def test_unknown_handler(kubelet: Kubelet) -> None:
    err = refused(kubelet.run_pod, "nope", "bad-handler")
    assert 'no runtime for "nope" is configured' in err, err
    assert kubelet.list_pods() == []


def test_missing_sandbox_image(kubelet: Kubelet, node: CriNode, tmp_path: Path) -> None:
    """Without its pause image the CRI plugin tries to pull it; here nothing answers."""
    tar = str(tmp_path / "pause.tar")
    node.ctr("images", "export", tar, PAUSE_REF)
    node.ctr("images", "rm", "--sync", PAUSE_REF)
    try:
        err = refused(kubelet.run_pod, "cove", "no-pause")
        assert "failed to get sandbox image" in err and PAUSE_REF in err, err
        assert kubelet.list_pods() == []
    finally:
        node.ctr("images", "import", tar)


@pytest.mark.parametrize("handler", ["runc", "cove"])
def test_unknown_capability(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    """containerd passes a capability name through unchecked; Cove refuses it at
    StartContainer, and its reason reaches kubelet through the shim's log. runc 1.1
    only warns (in a log kubelet never shows) and runs the container without it."""
    pod = kubelet.run_pod(handler, f"badcap-{handler}")
    cid = kubelet.create(pod, "c", BUSYBOX_REF, ["true"],
                         security=pb.LinuxContainerSecurityContext(
                             capabilities=pb.Capability(add_capabilities=["FOO"])))
    if handler == "cove":
        err = refused(kubelet.start, cid)
        assert "CAP_FOO" in err and "OCI runtime create failed" in err, err
        assert "process.capabilities" in err, err  # Cove's JSON path of the bad entry
        assert kubelet.status_of(cid).state != pb.CONTAINER_RUNNING
    else:
        kubelet.start(cid)
        assert kubelet.wait_state(cid, pb.CONTAINER_EXITED).exit_code == 0
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", ["runc", "cove"])
def test_host_sysctl_refused(kubelet: Kubelet, handler: str) -> None:
    """A pod sysctl that is not namespaced would change the node: refused by the
    runtime at RunPodSandbox, the reason in kubelet's error, the pod gone."""
    err = refused(kubelet.run_pod, handler, f"badsysctl-{handler}",
                  sysctls={"kernel.panic": "1"})
    assert "kernel.panic" in err, err
    if handler == "cove":
        assert "linux.sysctl.kernel.panic: not a namespaced sysctl" in err, err
    assert kubelet.list_pods() == []


def test_missing_seccomp_profile(kubelet: Kubelet) -> None:
    """A Localhost profile that does not exist: containerd reads it at CreateContainer,
    before any runtime is called (so the reason is containerd's, for every handler)."""
    pod = kubelet.run_pod("cove", "badseccomp")
    err = refused(kubelet.create, pod, "c", BUSYBOX_REF, ["true"],
                  security=pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
                      profile_type=pb.SecurityProfile.Localhost,
                      localhost_ref="/nonexistent/profile.json")))
    assert "/nonexistent/profile.json" in err and "no such file" in err, err
    assert kubelet.list_containers(pod_sandbox_id=pod.id) == []
    kubelet.remove_pod(pod.id)


def test_container_in_removed_sandbox(kubelet: Kubelet) -> None:
    pod = kubelet.run_pod("cove", "gone")
    kubelet.remove_pod(pod.id)
    err = refused(kubelet.create, pod, "c", BUSYBOX_REF, ["true"])
    assert "NOT_FOUND" in err or "not found" in err, err
    assert kubelet.list_containers() == []


@pytest.mark.parametrize("handler", ["runc", "cove"])
def test_net_sysctl_on_host_network_refused(kubelet: Kubelet, handler: str) -> None:
    """A net.* sysctl in a host-network pod would change the node's network stack
    (kubelet refuses it earlier; the runtime refuses it too)."""
    from tests.lib.kubelet import NODE

    err = refused(kubelet.run_pod, handler, f"hostnet-sysctl-{handler}", network=NODE,
                  sysctls={"net.ipv4.ip_unprivileged_port_start": "80"})
    assert "net.ipv4.ip_unprivileged_port_start" in err, err
    if handler == "cove":
        assert "linux.sysctl.net.ipv4.ip_unprivileged_port_start: needs a new net" in err, err
    assert kubelet.list_pods() == []
