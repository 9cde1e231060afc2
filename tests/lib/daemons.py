"""The peers with private roots, as the tests drive them: podman 4.3 (through conmon),
dockerd 20.10 (cove-runtime registered in daemon.json `runtimes`) and containerd 1.6 +
ctr (cove-runtime behind containerd-shim-runc-v2), each a `Peer` (tests/lib/peers.py)
with cove-runtime as its OCI runtime. The fixtures that start them are in the test
modules (tests/peers) and, configured for a local registry, tests/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess

from tests.lib.peers import Peer, containerd_config, sh

CTR_NAMESPACE = "peerns"


class Podman(Peer):
    def __init__(self) -> None:
        super().__init__("podman", ["libpod_parent"],
                         # podman keeps its blob-info cache here whatever graphroot says.
                         ["/var/lib/containers", "/run/containers", "/run/libpod"])
        self.bin = "/usr/bin/podman"
        T = self.dir
        for d in ("tmp", "networks", "volumes"):
            os.makedirs(self.path(d))
        with open(self.path("containers.conf"), "w") as f:
            f.write(f"""[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_config_dir = "{T}/networks"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{T}/events.log"
tmp_dir = "{T}/tmp"
volume_path = "{T}/volumes"
runtime = "cove"
[engine.runtimes]
cove = ["{self.runtime}"]
""")
        with open(self.path("storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{T}/storage"\n'
                    f'runroot = "{T}/run"\n')
        with open(self.path("registries.conf"), "w") as f:
            f.write("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": self.path("containers.conf"),
                    "CONTAINERS_STORAGE_CONF": self.path("storage.conf"),
                    "CONTAINERS_REGISTRIES_CONF": self.path("registries.conf")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh([self.bin, *args], env=self.env, check=check, timeout=timeout, input=input)


class Docker(Peer):
    def __init__(self) -> None:
        super().__init__("docker", ["docker"],
                         ["/etc/docker/key.json", "/opt/containerd", "/run/containerd",
                          "/run/docker"])
        # /usr/local/bin may hold a newer client than this 20.10 daemon speaks.
        self.bin = "/usr/bin/docker"
        T = self.dir
        self.sock = self.path("docker.sock")
        os.makedirs(self.path("tmp"))
        with open(self.path("daemon.json"), "w") as f:
            json.dump({
                "data-root": f"{T}/data", "exec-root": f"{T}/exec",
                "pidfile": f"{T}/docker.pid", "hosts": [f"unix://{self.sock}"],
                "iptables": False, "ip6tables": False, "ip-forward": False,
                "ip-masq": False, "bridge": "none", "storage-driver": "overlay2",
                "exec-opts": ["native.cgroupdriver=cgroupfs"],
                "runtimes": {"cove": {"path": self.runtime}},
            }, f)

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh([self.bin, "-H", f"unix://{self.sock}", *args], check=check,
                  timeout=timeout)

    def ready(self) -> bool:
        if not os.path.exists(self.sock):
            return False
        return self("version", check=False, timeout=10).returncode == 0


class Containerd(Peer):
    def __init__(self) -> None:
        # The shim's sockets always live in /run/containerd/s.
        super().__init__("containerd", [CTR_NAMESPACE], ["/run/containerd"])
        self.bin = "/usr/bin/ctr"
        self.sock = self.path("c.sock")
        self.cove_root = self.path("cove-root")
        os.makedirs(self.path("tmp"))
        with open(self.path("config.toml"), "w") as f:
            f.write(containerd_config(self.dir, self.sock, cri=False))

    def ctr_argv(self, *args: str) -> list[str]:
        return [self.bin, "-a", self.sock, "-n", CTR_NAMESPACE, *args]

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(self.ctr_argv(*args), check=check, timeout=timeout)

    def run_args(self) -> list[str]:
        return ["--runc-binary", self.runtime, "--runc-root", self.cove_root]

    def task_status(self, cid: str) -> str:
        for line in self("task", "ls").stdout.splitlines()[1:]:
            f = line.split()
            if f and f[0] == cid:
                return f[2]
        return ""

    def runtime_log(self, cid: str) -> str:
        """The JSON log the shim passes to cove-runtime (--log): where errors go."""
        p = self.path("state", "io.containerd.runtime.v2.task", CTR_NAMESPACE, cid, "log.json")
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            return ""

    def remove(self, cid: str) -> None:
        self("task", "kill", "-s", "SIGKILL", cid, check=False)
        self("task", "rm", "-f", cid, check=False)
        self("container", "rm", cid, check=False)


def docker_run(dk: Docker, image: str, *cmd: str) -> str:
    return str(dk("run", "--rm", "--runtime", "cove", "--network", "none", image, *cmd,
                  timeout=120).stdout)
