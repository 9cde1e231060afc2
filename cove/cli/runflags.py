"""The flags of `cove run` and `cove create` (docker's, cove/engine/options.py's
RunOptions), shared by both commands: run.py and ops.py build their parsers and their
RunOptions from here."""

from __future__ import annotations

import argparse

from cove.cli.common import parse_bool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.options import RunOptions


def run_options(a: argparse.Namespace, attach: set[str]) -> RunOptions:
    """The RunOptions of `run`'s and `create`'s flags (`add_run_flags`)."""
    from cove.engine.options import RunOptions, parse_duration
    return RunOptions(
        image=a.image, command=a.command, name=a.name, detach=a.detach, rm=a.rm,
        env=a.env, env_files=a.env_file, volumes=a.volume, mounts=a.mount, tmpfs=a.tmpfs,
        publish=a.publish, network=a.network, memory=a.memory, cpus=a.cpus,
        pids_limit=a.pids_limit, user=a.user, workdir=a.workdir, entrypoint=a.entrypoint,
        hostname=a.hostname, read_only=a.read_only, isolation=a.isolation,
        cap_add=a.cap_add, cap_drop=a.cap_drop,
        security_opt=a.security_opt, restart=a.restart, health_cmd=a.health_cmd,
        health_interval=parse_duration(a.health_interval),
        health_timeout=parse_duration(a.health_timeout), health_retries=a.health_retries,
        health_start_period=parse_duration(a.health_start_period),
        health_on_failure=a.health_on_failure, log_opts=a.log_opt, tty=a.tty,
        interactive=a.interactive and (not attach or "stdin" in attach),
        stop_signal=a.stop_signal or "SIGTERM", stop_timeout=a.stop_timeout,
        privileged=a.privileged, publish_all=a.publish_all, expose=a.expose,
        add_host=a.add_host, dns=a.dns, dns_search=a.dns_search, dns_option=a.dns_option,
        init=a.init, ulimits=a.ulimit, labels=a.label, label_files=a.label_file,
        shm_size=a.shm_size, sysctls=a.sysctl, platform=a.platform, group_add=a.group_add,
        cpuset_cpus=a.cpuset_cpus, cpu_shares=a.cpu_shares, memory_swap=a.memory_swap,
        memory_reservation=a.memory_reservation, oom_kill_disable=a.oom_kill_disable,
        devices=a.device, device_cgroup_rules=a.device_cgroup_rule, systemd=a.systemd,
        annotations=a.annotation,
        cgroup_parent=a.cgroup_parent, ipc=a.ipc, pid=a.pid, uts=a.uts,
        cidfile=a.cidfile, detach_keys=getattr(a, "detach_keys", None))


def add_run_flags(r: argparse.ArgumentParser) -> None:
    """`run`'s and `create`'s flags, added in the order `--help` lists them (each part
    a run of that order, not a theme)."""
    _container_flags(r)
    _process_flags(r)
    _further_flags(r)
    _host_flags(r)


def _container_flags(r: argparse.ArgumentParser) -> None:
    """Detach, name, environment, storage, ports, isolation and network."""
    r.add_argument("-d", "--detach", action="store_true", help="run in the background")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--name", help="container name")
    r.add_argument("--hostname", help="container host name")
    r.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (or KEY)")
    r.add_argument("--env-file", action="append", default=[], help="file of KEY=VALUE lines")
    r.add_argument("-v", "--volume", action="append", default=[],
                   help="[SRC:]DST[:OPTS] (SRC a path: bind; a name: named volume; OPTS "
                        "ro|rw, z|Z, nocopy, [r]shared|[r]slave|[r]private)")
    r.add_argument("--mount", action="append", default=[],
                   help="type=bind|volume|tmpfs,source=S,target=T[,readonly]")
    r.add_argument("--tmpfs", action="append", default=[], help="a tmpfs at this path")
    r.add_argument("-p", "--publish", action="append", default=[],
                   help="[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] (no HOSTPORT: a free one, "
                        "see `cove port`)")
    r.add_argument("--isolation", choices=["container", "gvisor", "vm"], default="",
                   help="namespaces (the default), gVisor, or a micro-VM (docs/isolation.md)")
    r.add_argument("--network", "--net", default="bridge",
                   help="none, host, bridge (the default) or a network's name")


def _process_flags(r: argparse.ArgumentParser) -> None:
    """Limits, the process (user, workdir, entrypoint), security, restart, health,
    logs and the terminal."""
    r.add_argument("-m", "--memory", help="memory limit (e.g. 64m; 6m at least)")
    r.add_argument("--cpus", type=float,
                   help="CPU quota in CPUs (e.g. 0.5; 0.01 up to the CPUs available)")
    r.add_argument("--pids-limit", type=int, help="most processes")
    r.add_argument("-w", "--workdir", help="working directory in the container")
    r.add_argument("-u", "--user", help="USER[:GROUP] (names or numbers)")
    r.add_argument("--entrypoint", help="replace the image's Entrypoint ('' clears it)")
    r.add_argument("--read-only", action="store_true", help="a read-only root filesystem")
    r.add_argument("--cap-add", action="append", default=[],
                   help="add a capability to docker's default 14 (or ALL)")
    r.add_argument("--cap-drop", action="append", default=[],
                   help="drop a capability (or ALL)")
    r.add_argument("--security-opt", action="append", default=[],
                   help="seccomp=FILE|unconfined, no-new-privileges")
    r.add_argument("--restart", default="no",
                   help="no, on-failure[:N], always or unless-stopped (not with --rm)")
    r.add_argument("--health-cmd", help="a shell command; exit 0 means healthy")
    r.add_argument("--health-interval", default="30s")
    r.add_argument("--health-timeout", default="30s")
    r.add_argument("--health-retries", type=int, default=3)
    r.add_argument("--health-start-period", default="0s")
    r.add_argument("--health-on-failure", default="none", choices=["none", "kill", "restart"])
    r.add_argument("--log-opt", action="append", default=[], help="max-size=S, max-file=N")
    r.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    r.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")


def _further_flags(r: argparse.ArgumentParser) -> None:
    """Attach, pull, privileges, ports, hosts and DNS, init, ulimits, labels, stop."""
    # docker's further flags (cove/engine/hostconfig.py)
    r.add_argument("-a", "--attach", action="append", default=[], metavar="STREAM",
                   help="attach to STDIN, STDOUT or STDERR (default: stdout and stderr)")
    r.add_argument("--sig-proxy", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="pass the signals this process gets to the "
                                        "container (default true; --sig-proxy=false)")
    r.add_argument("--cidfile", help="write the container's ID to this file (which must "
                                     "not exist)")
    r.add_argument("--pull", default="missing", choices=["always", "missing", "never"],
                   help="pull the image before running (default missing)")
    r.add_argument("--platform", help="os/arch[/variant] of the image")
    r.add_argument("--privileged", action="store_true",
                   help="every capability and host device, no seccomp, /sys writable")
    r.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port to a free host port")
    r.add_argument("--expose", action="append", default=[],
                   help="expose a port or range (PORT[-PORT][/tcp|udp])")
    r.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="an /etc/hosts entry (IP may be host-gateway)")
    r.add_argument("--dns", action="append", default=[], help="a DNS server")
    r.add_argument("--dns-search", action="append", default=[],
                   help="a DNS search domain ('.' for none)")
    r.add_argument("--dns-option", "--dns-opt", action="append", default=[],
                   help="a resolv.conf option (e.g. ndots:2)")
    r.add_argument("--init", action="store_true",
                   help="run tini as pid 1: it reaps zombies and forwards signals")
    r.add_argument("--ulimit", action="append", default=[],
                   help="NAME=SOFT[:HARD], e.g. nofile=1024:2048 (-1: unlimited)")
    r.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    r.add_argument("--label-file", action="append", default=[],
                   help="a file of KEY=VALUE lines")
    r.add_argument("--stop-signal", help="the signal `stop` sends (default SIGTERM)")
    r.add_argument("--stop-timeout", type=int,
                   help="seconds `stop` waits before SIGKILL (default 10; -1: no limit)")


def _host_flags(r: argparse.ArgumentParser) -> None:
    """Kernel and cgroup settings, devices, systemd and namespaces."""
    r.add_argument("--shm-size", help="size of /dev/shm (default 64m)")
    r.add_argument("--sysctl", action="append", default=[],
                   help="NAME=VALUE, namespaced ones only (net.*, kernel.shm*, ...)")
    r.add_argument("--group-add", action="append", default=[],
                   help="an additional group (a name in the image, or a number)")
    r.add_argument("--cpuset-cpus", help="CPUs it may run on (0-3, 0,1)")
    r.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight")
    r.add_argument("--memory-swap", help="memory + swap limit (-1: unlimited swap)")
    r.add_argument("--memory-reservation", help="a soft memory limit")
    r.add_argument("--oom-kill-disable", action="store_true",
                   help="don't OOM-kill it (use with --memory)")
    r.add_argument("--device", action="append", default=[],
                   help="a host device: /dev/HOST[:/dev/CONTAINER][:rwm], or a CDI "
                        "device: vendor.com/class=name|all (docs/devices.md)")
    r.add_argument("--device-cgroup-rule", action="append", default=[], metavar="RULE",
                   help="allow devices in the cgroup: 'TYPE MAJOR:MINOR ACCESS' "
                        "(c 1:3 rwm, a *:* m)")
    r.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="an annotation of the OCI config (cdi.k8s.io/NAME=vendor.com/"
                        "class=dev: a CDI device, as CRI passes them)")
    r.add_argument("--systemd", default="false", metavar="true|false|always",
                   help="systemd as pid 1: tmpfs /run, a writable cgroup, machine-id, "
                        "stop signal SIGRTMIN+3 (true: when the command is init or "
                        "systemd; default false)")
    r.add_argument("--cgroup-parent", help="the cgroup to put its cgroup under")
    r.add_argument("--ipc", help="private (default), shareable, none, host or "
                                 "container:NAME")
    r.add_argument("--pid", help="host or container:NAME (default: its own)")
    r.add_argument("--uts", help="host (default: its own)")
