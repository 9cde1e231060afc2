"""A new container's record (docker's inspect shape, `cove.engine.state` keeps it):
every flag checked and turned into its field before anything is made, so that a
mistake in a flag is one line and never a container that runs with something else.
Pure but for reading --env-file/--label-file files and the CPU count: unit-testable
without root."""

from __future__ import annotations

import os
from typing import Any, Required, TypedDict

from cove.engine import hostconfig, state
from cove.engine import logs as logfile
from cove.engine.options import (
    RunOptions,
    _cap,
    _check_env,
    _env_files,
    parse_duration,
    parse_publish,
    parse_restart,
    parse_volume,
)
from cove.errors import CoveError

ACTIVE = ("running", "restarting", "paused")  # paused: `cove pause` (cove/engine/ops.py)


# -- the record's shape -------------------------------------------------------------------
# What `new_record` makes and cove/engine/state.py keeps: docker's inspect shape plus
# cove's own keys. `total=False` where a key is set later in the container's life (or
# only by some paths). cove/engine/state.py's `load_record`/`update_record`/
# `current_record` (and refresh_record, inspect_record, ps_records) hand it out; the
# engine moved to it a module at a time (issue 19), as mypy takes neither a Record for a
# dict[str, Any] nor the reverse. Only state.py's `load`/`update` still hand out a plain
# dict (for files with keys no Record has, in tests and bench); a function that only
# reads a record takes Mapping[str, Any], which both are.

class Healthcheck(TypedDict):
    Test: list[str]
    Interval: float
    Timeout: float
    Retries: int
    StartPeriod: float


class HealthState(TypedDict, total=False):
    Status: str            # starting, healthy, unhealthy
    FailingStreak: int
    Log: list[dict[str, Any]]


class RecordConfig(TypedDict, total=False):
    Hostname: Required[str]
    Cmd: Required[list[str]]
    Tty: Required[bool]
    Env: Required[list[str]]
    Healthcheck: Required[Healthcheck | None]
    StopSignal: Required[str | None]
    StopTimeout: Required[int | None]
    Labels: Required[dict[str, str]]
    OpenStdin: bool
    ExposedPorts: dict[str, dict[str, Any]]
    Volumes: dict[str, dict[str, Any]] | None  # the image's (create.py): None for none


class HostConfig(TypedDict, total=False):
    """cove/engine/hostconfig.py's `host_config` and what `new_record` adds."""
    AutoRemove: bool
    RestartPolicy: dict[str, Any]
    LogConfig: dict[str, Any]
    PortBindings: dict[str, list[dict[str, str]]]
    NetworkMode: str
    Memory: int
    NanoCpus: int
    CpuPeriod: int
    CpuQuota: int
    PidsLimit: int
    ReadonlyRootfs: bool
    CapAdd: list[str]
    CapDrop: list[str]
    SecurityOpt: list[str]
    HealthOnFailure: str
    Binds: list[str]
    Mounts: list[dict[str, Any]]
    CDIDevices: list[str]
    Systemd: str
    Annotations: dict[str, str]
    DeviceCgroupRules: list[str]
    Privileged: bool
    PublishAllPorts: bool
    ExtraHosts: list[str]
    Dns: list[str]
    DnsSearch: list[str]
    DnsOptions: list[str]
    Init: bool
    Ulimits: list[dict[str, Any]]
    ShmSize: int
    Sysctls: dict[str, str]
    GroupAdd: list[str]
    CpusetCpus: str
    CpuShares: int
    MemorySwap: int
    MemoryReservation: int
    OomKillDisable: bool
    Devices: list[dict[str, str]]
    CgroupParent: str
    IpcMode: str
    PidMode: str
    UTSMode: str
    Tmpfs: dict[str, str]


class RecordState(TypedDict, total=False):
    Status: Required[str]  # created, running, restarting, paused, exited, dead
    Running: Required[bool]
    Pid: Required[int]
    PidStart: Required[int | None]  # the pid's start time: is it still our process
    ExitCode: Required[int]
    Error: Required[str]
    StartedAt: Required[str]
    FinishedAt: Required[str]
    Health: Required[HealthState | None]
    Paused: bool
    Checkpointed: bool     # `cove checkpoint` stopped it (cove/engine/checkpoint.py)
    Restored: bool         # `cove restore` brought it back


class NetworkSettings(TypedDict, total=False):
    Networks: Required[dict[str, dict[str, Any]]]
    Ports: Required[dict[str, Any]]
    IPAddress: str                      # on its primary network, once it started
    Gateway: str


class Record(TypedDict, total=False):
    """A container's record (state.json)."""
    Id: Required[str]
    Name: Required[str]
    Created: Required[str]
    Image: Required[str]
    ImageDigest: Required[str]
    Path: Required[str]
    Args: Required[list[str]]
    Config: Required[RecordConfig]
    HostConfig: Required[HostConfig]
    Mounts: Required[list[dict[str, Any]]]
    State: Required[RecordState]
    RestartCount: Required[int]
    ManuallyStopped: Required[bool]
    MonitorPid: Required[int]
    NetworkSettings: Required[NetworkSettings]
    LogPath: str
    CreatedVolumes: list[str]           # volumes `run` made for it (removed with --rm)
    AnonymousVolumes: list[str]
    ZygotePid: int                      # the keeper that forks its monitor
    ZygoteStart: int | None
    RestartLog: list[dict[str, Any]]    # the last restarts of its policy, and why
    Checkpoint: dict[str, Any]          # the last `cove checkpoint` of it
    Api: dict[str, Any]                 # what the Docker API was asked that docker keeps
    Connected: dict[str, dict[str, Any]]  # `network connect`: joined at each start


MIN_MEMORY = 6 << 20  # docker's minimum memory limit (6 MiB)


def check_name(name: str) -> None:
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            or name.startswith((".", "-")):
        raise CoveError(f"--name {name!r}", "use letters, digits, '-', '_' and '.'")


def new_record(cid: str, name: str, o: RunOptions, digest: str,
               argv: list[str]) -> Record:
    """The record of a container about to be made from `o`, every flag checked."""
    hostconfig.check_signal(o.stop_signal)
    lc = _log_config(o.log_opts)
    health = _healthcheck(o)
    mem = _memory(o)
    policy = parse_restart(o.restart)
    _check_flags(o, policy["Name"])
    from cove.engine import rootless
    net = rootless.network_mode(o.network)  # rootless: slirp4netns for the default
    hc = hostconfig.host_config(o, net, mem)
    rec: Record = {
        "Id": cid, "Name": name, "Created": state.now_rfc3339(), "Image": o.image,
        "ImageDigest": digest, "Path": argv[0] if argv else "", "Args": argv[1:],
        "Config": {"Hostname": o.hostname or cid[:12], "Cmd": o.command, "Tty": o.tty,
                   "Env": o.env, "Healthcheck": health, "StopSignal": o.stop_signal,
                   "StopTimeout": o.stop_timeout,
                   "Labels": hostconfig.parse_labels(o.labels, o.label_files)},
        "HostConfig": {
            **hc,
            "AutoRemove": o.rm and o.detach,
            "RestartPolicy": policy,
            "LogConfig": {"Type": "json-file", "Config": lc},
            "PortBindings": parse_publish(o.publish),
            "NetworkMode": net,
            "Memory": mem, "NanoCpus": int((o.cpus or 0) * 1e9),
            "PidsLimit": o.pids_limit or 0, "ReadonlyRootfs": o.read_only,
            "CapAdd": o.cap_add, "CapDrop": o.cap_drop, "SecurityOpt": o.security_opt,
            "HealthOnFailure": o.health_on_failure,
        },
        "Mounts": [],
        "State": {"Status": "created", "Running": False, "Pid": 0, "PidStart": None,
                  "ExitCode": 0, "Error": "", "StartedAt": "0001-01-01T00:00:00Z",
                  "FinishedAt": "0001-01-01T00:00:00Z", "Health": None},
        "RestartCount": 0, "ManuallyStopped": False, "MonitorPid": 0,
        "NetworkSettings": {"Networks": {}, "Ports": {}},
    }
    return rec


def _log_config(log_opts: list[str]) -> dict[str, str]:
    """--log-opt: json-file's max-size and max-file, with docker's `local` defaults."""
    lc: dict[str, str] = {}
    for opt in log_opts:
        k, _, v = opt.partition("=")
        if k not in ("max-size", "max-file"):
            raise CoveError(f"--log-opt {opt}", "json-file takes max-size and max-file")
        lc[k] = v
    if "max-size" in lc:
        logfile.parse_size(lc["max-size"])
    # a default cap, as docker's `local` driver has (a chatty container must not fill
    # the disk the whole engine lives on): --log-opt max-size=0 for none
    lc.setdefault("max-size", logfile.DEFAULT_MAX_SIZE)
    lc.setdefault("max-file", logfile.DEFAULT_MAX_FILE if lc["max-size"] != "0" else "1")
    return lc


def _healthcheck(o: RunOptions) -> Healthcheck | None:
    """--health-*: the record's Config.Healthcheck (None without --health-cmd)."""
    health: Healthcheck | None = None
    if o.health_cmd:
        health = {"Test": ["CMD-SHELL", o.health_cmd],
                  "Interval": parse_duration(o.health_interval),
                  "Timeout": parse_duration(o.health_timeout),
                  "Retries": int(o.health_retries),
                  "StartPeriod": parse_duration(o.health_start_period)}
        for k, v in (("Interval", health["Interval"]), ("Timeout", health["Timeout"])):
            if v <= 0:
                raise CoveError(f"--health-{k.lower()} {v}", "must be more than 0s")
    if o.health_on_failure not in ("none", "kill", "restart"):
        raise CoveError(f"--health-on-failure {o.health_on_failure}",
                        "expected none, kill or restart")
    return health


def _memory(o: RunOptions) -> int:
    """--memory in bytes (0: no limit), and --cpus against the CPUs there are."""
    try:
        mem = logfile.parse_size(o.memory) if o.memory else 0
    except CoveError as e:
        raise CoveError(f"--memory {o.memory}", e.why) from None
    if 0 < mem < MIN_MEMORY:
        # the container's init would be OOM-killed while it sets up ("exited during
        # setup"); docker refuses the same
        raise CoveError(f"--memory {o.memory}", "minimum memory limit allowed is 6MB")
    if o.cpus:
        n = len(os.sched_getaffinity(0))
        if not 0.01 <= o.cpus <= n:  # (NaN too)
            raise CoveError(f"--cpus {o.cpus:g}", f"range of CPUs is from 0.01 to {n}.00, "
                                                  f"as there are only {n} CPUs available")
    return mem


def _check_flags(o: RunOptions, restart: str) -> None:
    """The flags whose values the record keeps as given: checked, not converted."""
    if o.rm and restart != "no":
        raise CoveError(f"--restart {o.restart}", "conflicting options: --restart and --rm")
    for env in o.env:
        _check_env(env, "-e")
    _env_files(o.env_files)
    for v in o.volumes:
        parse_volume(v)
    for c in o.cap_add:
        _cap(c, "--cap-add")
    for c in o.cap_drop:
        _cap(c, "--cap-drop")
