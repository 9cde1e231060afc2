"""A new container's record (docker's inspect shape, `cove.engine.state` keeps it):
every flag checked and turned into its field before anything is made, so that a
mistake in a flag is one line and never a container that runs with something else.
Pure but for reading --env-file/--label-file files and the CPU count: unit-testable
without root."""

from __future__ import annotations

import os
from typing import Any

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


MIN_MEMORY = 6 << 20  # docker's minimum memory limit (6 MiB)


def check_name(name: str) -> None:
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            or name.startswith((".", "-")):
        raise CoveError(f"--name {name!r}", "use letters, digits, '-', '_' and '.'")


def new_record(cid: str, name: str, o: RunOptions, digest: str,
                argv: list[str]) -> dict[str, Any]:
    hostconfig.check_signal(o.stop_signal)
    lc: dict[str, str] = {}
    for opt in o.log_opts:
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
    health: dict[str, Any] | None = None
    if o.health_cmd:
        health = {"Test": ["CMD-SHELL", o.health_cmd],
                  "Interval": parse_duration(o.health_interval),
                  "Timeout": parse_duration(o.health_timeout),
                  "Retries": int(o.health_retries),
                  "StartPeriod": parse_duration(o.health_start_period)}
        for k in ("Interval", "Timeout"):
            if health[k] <= 0:
                raise CoveError(f"--health-{k.lower()} {health[k]}", "must be more than 0s")
    if o.health_on_failure not in ("none", "kill", "restart"):
        raise CoveError(f"--health-on-failure {o.health_on_failure}",
                        "expected none, kill or restart")
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
    policy = parse_restart(o.restart)
    if o.rm and policy["Name"] != "no":
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
    from cove.engine import rootless
    net = rootless.network_mode(o.network)  # rootless: slirp4netns for the default
    hc = hostconfig.host_config(o, net, mem)
    return {
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
