"""The keywords of the Python API's `run`/`create` → the engine's `RunOptions`.

The API takes docker-py's names and shapes (`environment={...}`, `volumes={src: {"bind":
..., "mode": "ro"}}`, `ports={"80/tcp": 8080}`, `mem_limit="512m"`, `restart_policy={...}`,
a string command split as a shell would) and cove's own names (`env`, `publish`,
`memory`, `restart`, `workdir`, `rm`, `health_cmd`, ...: the `cove run` flags). A value
is either translated to what it means for docker, or refused with a TypeError naming
the keyword: code written for docker-py must never get a different meaning in silence.
docker-py keywords the engine cannot honour are accepted only with an empty value
(None, False, 0, "", [], {}), which asks for nothing.

Nothing here makes anything: `translate` only reads its arguments; the engine checks
the values it parses itself (sizes, volume options, capabilities, ...) when it creates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cove.engine.options import RunOptions, parse_duration
from cove.engine.runkw import (
    bool_of,
    cpus,
    fail,
    healthcheck,
    labels,
    log_config,
    mem_limit,
    mounts,
    network,
    ports,
    restart_policy,
    str_of,
    strs,
    tmpfs,
    volumes,
)
from cove.engine.runkw import command as command  # also the API's exec_run's
from cove.engine.runkw import environment as environment

# docker-py keywords (containers.run/create) the engine has no way to honour
UNSUPPORTED = frozenset({
    "blkio_weight_device", "blkio_weight", "cgroup_parent", "cgroupns", "cpu_count",
    "cpu_percent", "cpu_shares", "cpuset_cpus", "cpuset_mems", "cpu_rt_period",
    "cpu_rt_runtime", "device_cgroup_rules", "device_read_bps", "device_read_iops",
    "device_write_bps", "device_write_iops", "devices", "device_requests", "dns_opt",
    "dns_search", "dns", "domainname", "extra_hosts", "group_add", "init", "init_path",
    "ipc_mode", "kernel_memory", "links", "lxc_conf", "mac_address", "mem_reservation",
    "mem_swappiness", "memswap_limit", "networking_config", "oom_kill_disable",
    "oom_score_adj", "pid_mode", "platform", "privileged", "publish_all_ports",
    "shm_size", "storage_opt", "sysctls", "ulimits", "userns_mode", "uts_mode",
    "volume_driver", "volumes_from", "runtime", "stop_timeout",
})
# docker-py keywords with no effect here: `version` is the HTTP API's, and cove has no
# proxy configuration for `use_config_proxy` to copy in
IGNORED = frozenset({"version", "use_config_proxy"})
# cove's own names for what docker-py spells otherwise; both at once is refused
ALIASES = {"env": "environment", "publish": "ports", "memory": "mem_limit",
           "workdir": "working_dir", "restart": "restart_policy", "rm": "remove",
           "interactive": "stdin_open"}
RUN_ONLY = frozenset({"stdout", "stderr", "stream", "remove", "rm"})
_COVE = frozenset({"env_files", "cpus", "isolation", "health_cmd", "health_interval",
                   "health_timeout", "health_retries", "health_start_period",
                   "health_on_failure", "log_opts"})
_DOCKER = frozenset({
    "detach", "entrypoint", "environment", "healthcheck", "hostname", "labels",
    "name", "network_disabled", "stdin_open", "stop_signal", "tty", "user", "working_dir",
    "auto_remove", "cap_add", "cap_drop", "cpu_period", "cpu_quota", "isolation",
    "log_config", "mem_limit", "mounts", "nano_cpus", "network_mode", "pids_limit",
    "read_only", "restart_policy", "security_opt", "tmpfs", "ports", "volumes", "network",
})
KNOWN = _DOCKER | _COVE | UNSUPPORTED | IGNORED | set(ALIASES) | RUN_ONLY


@dataclass
class Plan:
    """What a `run`/`create` call asks for: the engine's options and what the API does
    around them (labels go into the record; `remove` without `detach` is the API's)."""
    options: RunOptions
    labels: dict[str, str] = field(default_factory=dict)
    remove: bool = False       # the API removes it after the wait (run, not detached)
    detach: bool = False
    stdout: bool = True
    stderr: bool = False
    stream: bool = False



def translate(image: str, cmd: object, kwargs: dict[str, Any], *, call: str,
              default_network: str, run: bool) -> Plan:
    """The engine's options for `call` (e.g. "containers.run"); `default_network` is
    the network when none is named ("auto": none, or bridge when ports are published);
    `run` allows the run-only keywords (stdout, stderr, stream, remove)."""
    kw = _keywords(kwargs, call, run)
    if not isinstance(image, str) or not image:
        raise fail(call, "image", f"expected an image name, got {image!r}")
    o = RunOptions(image=image, command=command(call, "command", cmd))
    plan = _plan(o, kw, call, run)
    if kw.get("name") is not None:
        o.name = str_of(call, "name", kw["name"])
    kw.pop("name", None)
    o.env = environment(call, "environment", kw.pop("environment", None))
    o.env_files = strs(call, "env_files", kw.pop("env_files", None) or [])
    o.volumes = volumes(call, kw.pop("volumes", None))
    o.mounts = mounts(call, kw.pop("mounts", None))
    o.tmpfs = tmpfs(call, kw.pop("tmpfs", None))
    p = kw.pop("ports", None)
    # a dict is docker-py's; a list (or one str) is cove's -p specs, ["8080:80/tcp"]
    o.publish = strs(call, "publish", p) if isinstance(p, list | tuple | str) else \
        ports(call, p)
    o.network = network(call, kw, default_network, bool(o.publish))
    o.memory = mem_limit(call, kw.pop("mem_limit", None))
    o.cpus = cpus(call, kw)
    pids = kw.pop("pids_limit", None)
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int)):
        raise fail(call, "pids_limit", f"expected an int, got {pids!r}")
    o.pids_limit = pids if pids and pids > 0 else None
    _process(o, kw, call)
    o.restart = restart_policy(call, kw.pop("restart_policy", None))
    if (o.rm or plan.remove) and o.restart.partition(":")[0] not in ("", "no"):
        # docker's "conflicting options: --restart and --rm": removed on its first exit,
        # or restarted?
        raise fail(call, "restart_policy", f"{o.restart!r} and remove together")
    _health(o, kw, call)
    o.log_opts = [*strs(call, "log_opts", kw.pop("log_opts", None) or []),
                  *log_config(call, kw.pop("log_config", None))]
    # a terminal: the container runs under the monitor like any other (its output, raw,
    # in its log as docker logs a tty); stdin_open keeps its stdin (its terminal's, with
    # tty) open for a later attach, as `run -dit` (docker-py's usual keep-alive)
    o.tty = bool_of(call, "tty", kw.pop("tty", False))
    o.interactive = bool_of(call, "stdin_open", kw.pop("stdin_open", False))
    if kw.get("stop_signal") is not None:
        o.stop_signal = str_of(call, "stop_signal", kw["stop_signal"])
    kw.pop("stop_signal", None)
    plan.labels = labels(call, kw.pop("labels", None))
    if kw:  # KNOWN names a keyword this function does not translate: refuse, not drop
        raise fail(call, sorted(kw)[0], "not supported by cove")
    return plan


def _keywords(kwargs: dict[str, Any], call: str, run: bool) -> dict[str, Any]:
    """The call's keywords under docker's names, unknown ones refused, the unsupported
    ones refused unless empty, the ignored ones dropped."""
    kw = dict(kwargs)
    unknown = sorted(set(kw) - (KNOWN if run else KNOWN - RUN_ONLY))
    if unknown:
        word = "an unexpected keyword argument" if len(unknown) == 1 else \
            "unexpected keyword arguments"
        raise TypeError(f"{call}() got {word} {', '.join(repr(k) for k in unknown)}")
    for cove_name, docker_name in ALIASES.items():
        if cove_name in kw:
            if docker_name in kw:
                raise fail(call, cove_name, f"and {docker_name} together (the same thing)")
            kw[docker_name] = kw.pop(cove_name)
    for k in sorted(set(kw) & UNSUPPORTED):
        if kw[k]:
            raise fail(call, k, "not supported by cove")
        del kw[k]
    for k in IGNORED:
        kw.pop(k, None)
    return kw


def _plan(o: RunOptions, kw: dict[str, Any], call: str, run: bool) -> Plan:
    """What the API does around the engine: which output it returns, whether it waits,
    and who removes the container (the API after its wait, or the engine)."""
    plan = Plan(o)
    if run:
        plan.stdout = bool_of(call, "stdout", kw.pop("stdout", True))
        plan.stderr = bool_of(call, "stderr", kw.pop("stderr", False))
        plan.stream = bool_of(call, "stream", kw.pop("stream", False))
        plan.remove = bool_of(call, "remove", kw.pop("remove", False))
    auto_remove = bool_of(call, "auto_remove", kw.pop("auto_remove", False))
    plan.detach = bool_of(call, "detach", kw.pop("detach", False))
    o.detach = True            # the engine starts it in the background; the API waits
    if run and not plan.detach:
        # the API waits, reads the logs, then removes it itself
        plan.remove = plan.remove or auto_remove
    else:
        # docker: remove with detach is the daemon's auto-removal, as is auto_remove
        o.rm = auto_remove or plan.remove
        plan.remove = False
    return plan


def _process(o: RunOptions, kw: dict[str, Any], call: str) -> None:
    """The process's identity and confinement: user, working dir, entrypoint, hostname,
    read-only root, isolation, capabilities, security options."""
    user = kw.pop("user", None)
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    o.user = str_of(call, "user", user) if user not in (None, "") else None
    wd = kw.pop("working_dir", None)
    o.workdir = str_of(call, "working_dir", wd) if wd else None
    if "entrypoint" in kw and kw["entrypoint"] is not None:
        ep = command(call, "entrypoint", kw["entrypoint"])
        # the engine takes one word: the rest goes before the command (the same argv)
        o.entrypoint = ep[0] if ep else ""
        o.command = [*ep[1:], *o.command]
    kw.pop("entrypoint", None)
    hn = kw.pop("hostname", None)
    o.hostname = str_of(call, "hostname", hn) if hn else None
    o.read_only = bool_of(call, "read_only", kw.pop("read_only", False))
    iso = kw.pop("isolation", None) or ""
    if iso not in ("", "default", "container", "gvisor", "vm"):
        raise fail(call, "isolation", f"{iso!r}: expected container, gvisor or vm")
    o.isolation = "" if iso == "default" else iso
    o.cap_add = strs(call, "cap_add", kw.pop("cap_add", None) or [])
    o.cap_drop = strs(call, "cap_drop", kw.pop("cap_drop", None) or [])
    # docker spells it no-new-privileges[:true]; the engine takes [=true]
    o.security_opt = [s.replace("no-new-privileges:", "no-new-privileges=", 1)
                      for s in strs(call, "security_opt", kw.pop("security_opt", None) or [])]


def _health(o: RunOptions, kw: dict[str, Any], call: str) -> None:
    """docker-py's healthcheck={...} and cove's health_* keywords."""
    healthcheck(call, kw.pop("healthcheck", None), o)
    for k in ("health_cmd", "health_on_failure"):
        if kw.get(k) is not None:
            setattr(o, k, str_of(call, k, kw[k]))
        kw.pop(k, None)
    for k in ("health_interval", "health_timeout", "health_start_period", "health_retries"):
        if kw.get(k) is not None:
            x = kw[k]
            if k == "health_retries":
                if isinstance(x, bool) or not isinstance(x, int):
                    raise fail(call, k, f"expected an int, got {x!r}")
                o.health_retries = x
            else:
                if isinstance(x, bool) or not isinstance(x, int | float | str):
                    raise fail(call, k, f"expected seconds or a duration, got {x!r}")
                setattr(o, k, parse_duration(x))
        kw.pop(k, None)
