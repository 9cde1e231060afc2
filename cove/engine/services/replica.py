"""A project's replicas: what their records say (`replicas`), what a pass counts them as
(`alive`, `serving`, `final_exit`), and the options a new one is made with
(`run_options`)."""

from __future__ import annotations

from typing import Any

from cove.engine import state

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
HASH = "com.docker.compose.config-hash"
RES_CPUS, RES_MEMORY = "cove.reservations.cpus", "cove.reservations.memory"  # autoscale's


def replicas(root: str, project: str) -> dict[str, list[dict[str, Any]]]:
    """The project's containers by service, from their records."""
    paths = state.Paths(root)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in state.all_names(paths):
        try:
            rec = state.load_record(paths.cdir(name))
        except Exception:
            continue
        if rec is None:
            continue
        labels = rec.get("Config", {}).get("Labels") or {}
        if labels.get(PROJECT) != project:
            continue
        st = rec["State"]
        health = (st.get("Health") or {}).get("Status") if rec["Config"].get(
            "Healthcheck") else None
        out.setdefault(labels.get(SERVICE, ""), []).append({
            "name": name, "number": int(labels.get(NUMBER, "0") or 0),
            "hash": labels.get(HASH, ""), "status": st["Status"],
            "health": health, "exit": int(st.get("ExitCode") or 0),
            "ip": (rec.get("NetworkSettings") or {}).get("IPAddress") or "",
            "ips": {net: n.get("IPAddress") or "" for net, n in (
                (rec.get("NetworkSettings") or {}).get("Networks") or {}).items()},
            "created": state.parse_rfc3339(rec.get("Created", "")),
            "started": state.parse_rfc3339(st.get("StartedAt", "")),
            "finished": state.parse_rfc3339(st.get("FinishedAt", "")),
            "log": ((st.get("Health") or {}).get("Log") or [{}])[-1].get("Output", ""),
            "error": st.get("Error", "")})
    for v in out.values():
        v.sort(key=lambda r: r["number"])
    return out


def alive(r: dict[str, Any]) -> bool:
    return r["status"] in ("running", "paused", "restarting")


def serving(r: dict[str, Any]) -> bool:
    return r["status"] == "running" and r["health"] in (None, "healthy") and bool(r["ip"])


def final_exit(spec: dict[str, Any], code: int) -> bool:
    """Whether an exit with `code` is where the replica is meant to stay."""
    cond = (spec.get("restart_policy") or {}).get("condition")
    if cond:
        return cond == "none" or (cond == "on-failure" and code == 0)
    r = (spec.get("restart") or "").split(":")[0]
    if r == "no":
        return True
    if r in ("always", "unless-stopped"):
        return False
    return code == 0  # on-failure, or nothing said


def resource_name(project: str, name: str) -> str:
    return f"{project}_{name}"


def run_options(project: str, workdir: str, svc: str, s: dict[str, Any], n: int) -> Any:
    """What `cove run` would be given for replica `n` of the service `s` (its desired
    state): no published ports (the load balancer has them), restart `no` (the
    reconciler replaces), docker compose's labels."""
    from cove.engine.options import RunOptions
    spec = s["spec"]
    name = spec.get("container_name") or f"{project}-{svc}-{n}"
    cmd = list(spec["command"]) if spec["command"] is not None else []
    ep = None
    if spec["entrypoint"] is not None:
        ep = spec["entrypoint"][0] if spec["entrypoint"] else ""
        cmd = [*spec["entrypoint"][1:], *cmd]
    vols = []
    tmpfs = list(spec["tmpfs"])
    for v in spec["volumes"]:
        if v["type"] == "tmpfs":
            tmpfs.append(v["target"])
            continue
        src = v["source"]
        if v["type"] == "volume" and src:
            src = resource_name(project, src)
        vols.append(f"{src}:{v['target']}" + (":ro" if v["read_only"] else "")
                    if src else v["target"])
    hostname = spec.get("hostname")
    if hostname and s["replicas"] > 1:
        hostname = f"{hostname}-{n}"
    res = spec.get("reservations") or {}
    labels = {**spec["labels"], PROJECT: project, SERVICE: svc,
              **({RES_CPUS: str(res["cpus"])} if res.get("cpus") else {}),
              **({RES_MEMORY: str(res["memory"])} if res.get("memory") else {}),
              NUMBER: str(n), HASH: s["hash"], "com.docker.compose.oneoff": "False",
              "com.docker.compose.project.working_dir": workdir}
    hc = spec["healthcheck"]
    lim = spec["limits"]
    return RunOptions(
        image=spec["image"], name=name, detach=True, command=cmd, entrypoint=ep,
        env=[f"{k}={v}" for k, v in spec["environment"].items()], volumes=vols,
        tmpfs=tmpfs, network=resource_name(project, spec["networks"][0]),
        hostname=hostname or name, user=spec["user"], workdir=spec["working_dir"],
        restart="no", labels=[f"{k}={v}" for k, v in labels.items()],
        health_cmd=hc["test"] if hc else None,
        health_interval=hc["interval"] if hc else 30.0,
        health_timeout=hc["timeout"] if hc else 30.0,
        health_retries=hc["retries"] if hc else 3,
        health_start_period=hc["start_period"] if hc else 0.0,
        memory=lim.get("memory"), cpus=lim.get("cpus"), pids_limit=lim.get("pids"),
        stop_signal=spec["stop_signal"] or "SIGTERM",
        stop_timeout=int(spec["stop_grace_period"]), init=spec["init"],
        read_only=spec["read_only"], privileged=spec["privileged"],
        cap_add=spec["cap_add"], cap_drop=spec["cap_drop"], dns=spec["dns"],
        add_host=[h.replace("=", ":", 1) if "=" in h and ":" not in h else h
                  for h in spec["extra_hosts"]], expose=spec["expose"])
