"""critest's runtime-info, pod, container, exec and log cases through containerd's CRI
plugin, for the `cove` handler side by side with `runc` (the reference)."""

from __future__ import annotations

import os
import time

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from tests.lib.cri import BUSYBOX_REF, PAUSE_REF, CriNode
from tests.lib.kubelet import CREATED, EXITED, RUNNING, Kubelet

pytestmark = pytest.mark.peers

HANDLERS = ["runc", "cove"]


def test_runtime_info(kubelet: Kubelet) -> None:
    v = kubelet.version()
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1"
    conds = {c.type: c.status for c in kubelet.status().status.conditions}
    assert conds == {"RuntimeReady": True, "NetworkReady": True}
    for ref in (BUSYBOX_REF, PAUSE_REF):
        assert kubelet.image_status(ref).image.id, ref


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_lifecycle(kubelet: Kubelet, node: CriNode, handler: str) -> None:
    """RunPodSandbox with hostname, DNS, sysctls, port mappings and a cgroup parent;
    status, list with filters, stop, remove."""
    pod = kubelet.run_pod(handler, f"life-{handler}", hostname="pod-host",
                          dns=pb.DNSConfig(servers=["10.77.0.53"], searches=["svc.local"],
                                           options=["ndots:2"]),
                          sysctls={"net.ipv4.ip_unprivileged_port_start": "80"},
                          ports=[pb.PortMapping(protocol=pb.TCP, container_port=80,
                                                host_port=18080, host_ip="127.0.0.1")],
                          labels={"case": "life"})
    st = kubelet.pod_status(pod.id).status
    assert st.state == pb.SANDBOX_READY
    assert st.network.ip.startswith("10.77.0."), st.network
    assert st.metadata.name == f"life-{handler}"
    assert st.runtime_handler == handler
    # The handler's binary ran the sandbox: its runtime root holds the pause's state.
    assert os.path.exists(node.path(f"rt-{handler}", "k8s.io", pod.id, "state.json"))
    ready = kubelet.list_pods(label_selector={"case": "life"},
                              state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
    assert [p.id for p in ready] == [pod.id]
    assert kubelet.list_pods(id=pod.id[:12])[0].id == pod.id

    cid = kubelet.run(pod, "c", BUSYBOX_REF, ["sh", "-c"],
                      ["hostname; cat /etc/resolv.conf; "
                       "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; "
                       "ip -4 -o addr show eth0; sleep 3600"])
    kubelet.wait_state(cid, RUNNING)
    kubelet.wait_log(pod, "c", "inet ")
    out = "\n".join(kubelet.stdout_of(pod, "c"))
    assert "pod-host" in out
    assert "nameserver 10.77.0.53" in out and "search svc.local" in out
    assert "options ndots:2" in out
    assert "\n80\n" in out
    assert st.network.ip in out

    kubelet.stop_pod(pod.id)
    assert kubelet.pod_status(pod.id).status.state == pb.SANDBOX_NOTREADY
    assert kubelet.status_of(cid).state == EXITED
    kubelet.remove_pod(pod.id)
    assert kubelet.list_pods(id=pod.id) == []
    with pytest.raises(grpc.RpcError) as e:
        kubelet.status_of(cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("handler", HANDLERS)
def test_container_lifecycle(kubelet: Kubelet, handler: str) -> None:
    """Create (env, args, working dir, mounts) -> start -> status -> exec -> stop ->
    remove, with ListContainers filters and logs in the CRI format."""
    pod = kubelet.run_pod(handler, f"ctr-{handler}")
    hostdir = f"{pod.log_dir}/vol"
    os.makedirs(hostdir)
    with open(f"{hostdir}/data", "w") as f:
        f.write("from-the-host\n")
    cid = kubelet.create(
        pod, "app", BUSYBOX_REF, ["sh", "-c"],
        ['echo "start $GREETING $(pwd)"; cat /data/data; echo err >&2; '
         'trap "echo got-term; exit 3" TERM; while :; do sleep 0.1; done'],
        env={"GREETING": "hello"}, working_dir="/tmp",
        mounts=[pb.Mount(container_path="/data", host_path=hostdir, readonly=True)],
        labels={"tier": "app"})
    st = kubelet.status_of(cid)
    assert st.state == CREATED
    assert [c.id for c in kubelet.list_containers(
        pod_sandbox_id=pod.id, state=pb.ContainerStateValue(state=CREATED))] == [cid]
    kubelet.start(cid)
    kubelet.wait_state(cid, RUNNING)
    kubelet.wait_log(pod, "app", "from-the-host")
    kubelet.wait_log(pod, "app", "err")  # the shim copies stderr apart from stdout
    lines = kubelet.log_lines(pod, "app")
    assert ("stdout", "F", "start hello /tmp") in lines
    assert ("stderr", "F", "err") in lines
    assert [c.id for c in kubelet.list_containers(label_selector={"tier": "app"})] == [cid]

    r = kubelet.exec_sync(cid, ["sh", "-c", "echo out; echo oops >&2; exit 7"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"oops\n", 7)
    r = kubelet.exec_sync(cid, ["touch", "/data/x"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr

    t0 = time.monotonic()
    kubelet.stop(cid, grace=10)
    st = kubelet.status_of(cid)
    assert st.state == EXITED and st.exit_code == 3, st
    assert time.monotonic() - t0 < 8  # SIGTERM, not the grace period's SIGKILL
    kubelet.wait_log(pod, "app", "got-term")
    assert st.log_path.endswith("app/0.log")
    kubelet.remove(cid)
    assert kubelet.list_containers(pod_sandbox_id=pod.id) == []
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_exit_codes_and_stop_grace(kubelet: Kubelet, handler: str) -> None:
    """A container that exits by itself reports its code and reason; one that ignores
    SIGTERM is killed when the grace period ends."""
    pod = kubelet.run_pod(handler, f"exit-{handler}")
    done = kubelet.run(pod, "done", BUSYBOX_REF, ["sh", "-c", "echo bye; exit 5"])
    st = kubelet.wait_state(done, EXITED)
    assert st.exit_code == 5 and st.reason == "Error", st
    assert kubelet.stdout_of(pod, "done") == ["bye"]
    stubborn = kubelet.run(pod, "stubborn", BUSYBOX_REF,
                           ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"])
    kubelet.wait_log(pod, "stubborn", "up")
    t0 = time.monotonic()
    kubelet.stop(stubborn, grace=1)
    st = kubelet.status_of(stubborn)
    assert st.state == EXITED and st.exit_code == 137, st
    assert time.monotonic() - t0 < 6
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_app_and_sidecar_share_localhost(kubelet: Kubelet, handler: str) -> None:
    """The pod of the issue: an app serving on localhost, a sidecar that talks to it;
    both run to completion, logs in the CRI format."""
    pod = kubelet.run_pod(handler, f"sidecar-{handler}")
    app = kubelet.run(pod, "app", BUSYBOX_REF, ["sh", "-c",
                      "echo app-up; echo hello-from-app | nc -l -p 8080; echo app-done"])
    kubelet.wait_log(pod, "app", "app-up")
    side = kubelet.run(pod, "sidecar", BUSYBOX_REF, ["sh", "-c",
                       "for i in $(seq 50); do nc 127.0.0.1 8080 </dev/null && exit 0; "
                       "sleep 0.1; done; exit 1"])
    assert kubelet.wait_state(side, EXITED).exit_code == 0
    assert kubelet.wait_state(app, EXITED).exit_code == 0
    assert kubelet.stdout_of(pod, "sidecar") == ["hello-from-app"]
    assert kubelet.stdout_of(pod, "app") == ["app-up", "app-done"]
    kubelet.remove_pod(pod.id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_share_process_namespace(kubelet: Kubelet, handler: str) -> None:
    """shareProcessNamespace: the pod's pid namespace is the sandbox's; containers see
    the pause process and each other. Without it each has its own pid 1."""
    pod = kubelet.run_pod(handler, f"pidns-{handler}")
    a = kubelet.run(pod, "a", BUSYBOX_REF, ["sh", "-c", "echo $$; sleep 3600"])
    kubelet.wait_log(pod, "a", "1")
    assert kubelet.stdout_of(pod, "a") == ["1"]
    r = kubelet.exec_sync(a, ["ps", "-o", "args"])
    assert "pause" not in r.stdout.decode() and "2147483647" not in r.stdout.decode()
    kubelet.remove_pod(pod.id)

    shared = kubelet.run_pod(handler, f"pidns-shared-{handler}", pid=pb.POD)
    s1 = kubelet.run(shared, "s1", BUSYBOX_REF, ["sh", "-c", "sleep 3600"])
    s2 = kubelet.run(shared, "s2", BUSYBOX_REF, ["sh", "-c", "echo $$; sleep 3601"])
    kubelet.wait_state(s2, RUNNING)
    out = kubelet.exec_sync(s1, ["ps", "-o", "pid,args"]).stdout.decode()
    assert "sleep 2147483647" in out and "sleep 3601" in out, out
    first = out.splitlines()[1].split()
    assert first[0] == "1" and "2147483647" in out.splitlines()[1], out
    kubelet.remove_pod(shared.id)
