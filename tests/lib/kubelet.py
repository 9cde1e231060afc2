"""A kubelet-like driver over the CRI v1 gRPC API (containerd's CRI plugin).

It makes the calls kubelet makes, in kubelet's order and with kubelet's kind of
configs (a pod's log directory, a cgroup parent per pod, `<name>/<attempt>.log`
log paths), so the tests exercise the path a Kubernetes node takes to Cove's runtimes.
The stubs come from PyPI's `container-runtime-interface-api` (module `cri_api`).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as rpc

from tests.lib.host import cgroup_dirs, rm_cgroups

POD = pb.POD
NODE = pb.NODE
CONTAINER = pb.CONTAINER
CREATED, RUNNING, EXITED = pb.CONTAINER_CREATED, pb.CONTAINER_RUNNING, pb.CONTAINER_EXITED

# One CRI log line: "<RFC3339Nano time> <stdout|stderr> <F|P> <text>" (kubelet's reader,
# pkg/kubelet/kuberuntime/logs).
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$")


@dataclass
class Pod:
    """A pod sandbox as the driver made it."""

    id: str
    name: str
    uid: str
    handler: str
    config: pb.PodSandboxConfig
    log_dir: str
    containers: list[str] = field(default_factory=list)


class Kubelet:
    """The CRI calls of one node agent, against one containerd socket."""

    def __init__(self, socket: str, root: str, cgroup_root: str, timeout: float = 120) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        # The generated gRPC stubs are untyped: the replies are typed at each call below.
        stubs: Any = rpc
        self.rt: Any = stubs.RuntimeServiceStub(self.channel)
        self.img: Any = stubs.ImageServiceStub(self.channel)
        self.root = root                  # where pod log directories go
        self.cgroup_root = cgroup_root    # kubelet's /kubepods, private to the test
        self.timeout = timeout
        self.pods: dict[str, Pod] = {}
        self.leftovers: list[str] = []

    def close(self) -> None:
        self.channel.close()

    # ---- runtime and images ------------------------------------------------------

    def version(self) -> pb.VersionResponse:
        return cast(pb.VersionResponse,
                    self.rt.Version(pb.VersionRequest(version="v1"), timeout=self.timeout))

    def status(self) -> pb.StatusResponse:
        return cast(pb.StatusResponse,
                    self.rt.Status(pb.StatusRequest(verbose=False), timeout=self.timeout))

    def image_status(self, ref: str) -> pb.ImageStatusResponse:
        return cast(pb.ImageStatusResponse, self.img.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=self.timeout))

    # ---- pods --------------------------------------------------------------------

    def pod_config(self, name: str, *, network: Any = POD, pid: Any = CONTAINER, ipc: Any = POD,
                   hostname: str | None = None, dns: pb.DNSConfig | None = None,
                   ports: list[pb.PortMapping] | None = None,
                   sysctls: dict[str, str] | None = None, privileged: bool = False,
                   labels: dict[str, str] | None = None) -> pb.PodSandboxConfig:
        """A sandbox config as kubelet builds it from a pod spec."""
        uid = uuid.uuid4().hex
        log_dir = os.path.join(self.root, "pods", f"default_{name}_{uid}")
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default",
                                           attempt=0),
            log_directory=log_dir,
            labels={"io.kubernetes.pod.name": name, **(labels or {})},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=network, pid=pid,
                                                         ipc=ipc),
                    privileged=privileged),
                sysctls=sysctls or {},
            ),
        )
        if network != NODE:  # a host-network pod keeps the node's name
            cfg.hostname = hostname or name
        if dns is not None:
            cfg.dns_config.CopyFrom(dns)
        if ports:
            cfg.port_mappings.extend(ports)
        return cfg

    def run_pod(self, handler: str, name: str, **kw: Any) -> Pod:
        cfg = self.pod_config(name, **kw)
        os.makedirs(cfg.log_directory, exist_ok=True)
        r: pb.RunPodSandboxResponse = self.rt.RunPodSandbox(
            pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler), timeout=self.timeout)
        pod = Pod(r.pod_sandbox_id, name, cfg.metadata.uid, handler, cfg, cfg.log_directory)
        self.pods[pod.id] = pod
        return pod

    def pod_status(self, pod_id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        return cast(pb.PodSandboxStatusResponse, self.rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose),
            timeout=self.timeout))

    def list_pods(self, **flt: Any) -> list[pb.PodSandbox]:
        return list(self.rt.ListPodSandbox(
            pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(**flt)),
            timeout=self.timeout).items)

    def stop_pod(self, pod_id: str) -> None:
        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                               timeout=self.timeout)

    def remove_pod(self, pod_id: str) -> None:
        """Kubelet's teardown: stop, then remove (which removes its containers)."""
        self.stop_pod(pod_id)
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                 timeout=self.timeout)
        pod = self.pods.pop(pod_id, None)
        if pod is not None:
            self.remove_pod_cgroup(pod)

    def remove_pod_cgroup(self, pod: Pod) -> None:
        """Kubelet's pod cgroup manager removes the pod's cgroup once the pod is gone;
        a container cgroup still inside it is a runtime's leftover (recorded)."""
        rel = pod.config.linux.cgroup_parent
        dirs = cgroup_dirs(rel)
        self.leftovers += [d for d in dirs if not d.rstrip("/").endswith(rel)]
        self.leftovers += [f"{d} (stuck)" for d in rm_cgroups(rel)]

    def take_leftovers(self) -> list[str]:
        out, self.leftovers = self.leftovers, []
        return out

    # ---- containers --------------------------------------------------------------

    def container_config(self, pod: Pod, name: str, image: str, command: list[str],
                         args: list[str] | None = None, *, env: dict[str, str] | None = None,
                         working_dir: str = "", mounts: list[pb.Mount] | None = None,
                         resources: pb.LinuxContainerResources | None = None,
                         security: pb.LinuxContainerSecurityContext | None = None,
                         tty: bool = False, stdin: bool = False,
                         labels: dict[str, str] | None = None) -> pb.ContainerConfig:
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command, args=args or [], working_dir=working_dir,
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            mounts=mounts or [], log_path=f"{name}/0.log", tty=tty, stdin=stdin,
            stdin_once=stdin, labels={"io.kubernetes.container.name": name, **(labels or {})},
            linux=pb.LinuxContainerConfig(),
        )
        # kubelet always sends the pod's namespace choices with each container.
        sec = pb.LinuxContainerSecurityContext()
        sec.namespace_options.CopyFrom(
            pod.config.linux.security_context.namespace_options)
        if security is not None:
            sec.MergeFrom(security)
        cfg.linux.security_context.CopyFrom(sec)
        if resources is not None:
            cfg.linux.resources.CopyFrom(resources)
        return cfg

    def create(self, pod: Pod, name: str, image: str, command: list[str],
               args: list[str] | None = None, **kw: Any) -> str:
        cfg = self.container_config(pod, name, image, command, args, **kw)
        os.makedirs(os.path.join(pod.log_dir, name), exist_ok=True)
        r: pb.CreateContainerResponse = self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config),
            timeout=self.timeout)
        pod.containers.append(r.container_id)
        return r.container_id

    def start(self, cid: str) -> None:
        self.rt.StartContainer(pb.StartContainerRequest(container_id=cid),
                               timeout=self.timeout)

    def run(self, pod: Pod, name: str, image: str, command: list[str],
            args: list[str] | None = None, **kw: Any) -> str:
        cid = self.create(pod, name, image, command, args, **kw)
        self.start(cid)
        return cid

    def status_of(self, cid: str, verbose: bool = False) -> pb.ContainerStatus:
        return cast(pb.ContainerStatus, self.rt.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid, verbose=verbose),
            timeout=self.timeout).status)

    def list_containers(self, **flt: Any) -> list[pb.Container]:
        return list(self.rt.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(**flt)),
            timeout=self.timeout).containers)

    def wait_state(self, cid: str, state: int, timeout: float = 60) -> pb.ContainerStatus:
        """Poll ContainerStatus as kubelet's PLEG does (tighter: 20 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status_of(cid)
            if st.state == state:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"{cid[:12]} stayed {pb.ContainerState.Name(st.state)}"
                                     f" (want {pb.ContainerState.Name(state)}): {st}")
            time.sleep(0.02)

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 30) -> pb.ExecSyncResponse:
        return cast(pb.ExecSyncResponse, self.rt.ExecSync(
            pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
            timeout=timeout + self.timeout))

    def exec_url(self, cid: str, cmd: list[str], tty: bool = False,
                 stdin: bool = False) -> str:
        return cast(str, self.rt.Exec(pb.ExecRequest(container_id=cid, cmd=cmd, tty=tty,
                                                     stdin=stdin, stdout=True, stderr=not tty),
                                      timeout=self.timeout).url)

    def attach_url(self, cid: str, tty: bool = False, stdin: bool = False) -> str:
        return cast(str, self.rt.Attach(pb.AttachRequest(container_id=cid, tty=tty, stdin=stdin,
                                                         stdout=True, stderr=not tty),
                                        timeout=self.timeout).url)

    def update(self, cid: str, res: pb.LinuxContainerResources) -> None:
        self.rt.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(container_id=cid, linux=res),
            timeout=self.timeout)

    def stats(self, cid: str) -> pb.ContainerStats:
        return cast(pb.ContainerStats, self.rt.ContainerStats(
            pb.ContainerStatsRequest(container_id=cid), timeout=self.timeout).stats)

    def reopen_log(self, cid: str) -> None:
        self.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid),
                                   timeout=self.timeout)

    def stop(self, cid: str, grace: int = 10) -> None:
        self.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=grace),
                              timeout=grace + self.timeout)

    def remove(self, cid: str) -> None:
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid),
                                timeout=self.timeout)

    # ---- logs --------------------------------------------------------------------

    def log_path(self, pod: Pod, name: str) -> str:
        return os.path.join(pod.log_dir, name, "0.log")

    def log_lines(self, pod: Pod, name: str) -> list[tuple[str, str, str]]:
        """(stream, tag, text) of each line, checking every line is in the CRI format."""
        try:
            with open(self.log_path(pod, name)) as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines():
            m = LOG_LINE.match(line)
            assert m, f"not a CRI log line: {line!r}"
            out.append((m.group(4), m.group(5), m.group(6)))
        return out

    def stdout_of(self, pod: Pod, name: str) -> list[str]:
        return [t for s, _tag, t in self.log_lines(pod, name) if s == "stdout"]

    def wait_log(self, pod: Pod, name: str, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in t for _s, _g, t in self.log_lines(pod, name)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {name}'s log: "
                                     f"{self.log_lines(pod, name)}")
            time.sleep(0.02)

    # ---- teardown ----------------------------------------------------------------

    def remove_all(self) -> list[str]:
        """Remove every pod the CRI plugin knows of; return errors (for the fixture)."""
        errs = []
        for p in self.list_pods():
            try:
                self.remove_pod(p.id)
            except grpc.RpcError as e:
                errs.append(f"pod {p.id[:12]}: {e.details()}")
        return errs


def error_of(e: grpc.RpcError) -> str:
    """The message kubelet shows for a failed call."""
    return f"{e.code().name}: {e.details()}"


def info_json(resp: Any) -> dict[str, Any]:
    """The verbose `info` map of a status response, decoded."""
    return {k: json.loads(v) for k, v in resp.info.items()}
