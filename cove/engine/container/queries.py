"""What the engine answers about containers: inspect, ps (with the monitor started
again when a container relies on it), logs, top, stats and port, and the STATUS lines
of `ps`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cove.engine import logs as logfile
from cove.engine import monctl, state
from cove.engine.container.record import ACTIVE, Record
from cove.engine.container.refresh import monitor_alive, refresh_record
from cove.engine.container.rtcmd import runtime
from cove.errors import CoveError


def inspect_record(root: str, name: str, notify: Callable[[str], None] | None = None
                   ) -> Record:
    """The container's record, corrected (refresh); a monitor it relies on is
    started again if it died (`notify` hears of it: the CLI prints it)."""
    paths = state.Paths(root)
    was = monctl.running(root) > 0
    rec = refresh_record(paths, state.lookup(paths, name))  # (adopting a running container may
    if needs_monitor(rec) and not was and revive_monitor(root) and notify:  # start one)
        notify(REVIVED)
    return rec


def ps_records(root: str, all: bool = False,
               notify: Callable[[str], None] | None = None) -> list[Record]:
    """The containers' records (running ones, or `all`), corrected. A record that can't
    be read is skipped and `notify` hears why (one line: the CLI prints it); so it does
    when a dead monitor that a container relies on is started again."""
    paths = state.Paths(root)
    out: list[Record] = []
    supervised = False
    was = monctl.running(root) > 0
    for n in state.all_names(paths):
        try:
            rec = refresh_record(paths, n)
        except state.CorruptRecord as e:
            if notify:
                notify(str(e))  # one line; the others list as usual
            continue
        except CoveError:
            continue
        supervised = supervised or needs_monitor(rec)
        if all or rec["State"]["Status"] in ACTIVE:
            out.append(rec)
    if supervised and not was and revive_monitor(root) and notify:
        notify(REVIVED)
    return out


REVIVED = ("the monitor was not running (restart policies, health checks); started it "
           "again")


def needs_monitor(rec: Mapping[str, Any]) -> bool:
    """Whether a container relies on the monitor's policy: a health check while it
    runs, or a restart policy that may still act (not after a manual stop, not with
    --rm)."""
    st = rec["State"]
    if st["Status"] == "running" and rec["Config"].get("Healthcheck"):
        return True
    return rec["HostConfig"]["RestartPolicy"]["Name"] != "no" \
        and not rec.get("ManuallyStopped") and st["Status"] in ("running", "exited",
                                                                "restarting")


def revive_monitor(root: str) -> bool:
    """Start the root's monitor when a container relies on it and none ran (it and its
    keeper were killed, or stopped, or the host's processes were): restarts and health
    checks would otherwise stop without a word while `ps` says Up. Whether one runs
    now (refresh may have started it, to adopt a running container)."""
    if monctl.running(root):
        return True
    try:
        monctl.ensure(root)
    except CoveError:
        return False
    return True


def up_line(rec: Mapping[str, Any]) -> str:
    """`ps`'s STATUS of a running or paused container: "Up 5 seconds (Paused)"."""
    st = rec["State"]
    from cove.engine.units import human_duration
    line = "Up " + human_duration(time.time() - state.parse_rfc3339(st["StartedAt"]))
    if st["Status"] == "paused":
        return line + " (Paused)"
    h = (st.get("Health") or {}).get("Status")
    return line + (f" ({h})" if h else "")


def status_line(rec: Mapping[str, Any]) -> str:
    st = rec["State"]
    if st["Status"] in ("running", "paused"):
        return up_line(rec)  # docker's "Up 5 seconds (Paused)"
    if st["Status"] == "exited":
        # a restart that failed says why (the record's Error; inspect has it whole)
        err = str(st.get("Error") or "")
        return f"Exited ({st['ExitCode']})" + (f": {err[:60]}" if err else "")
    if st["Status"] == "restarting":
        return f"Restarting ({st['ExitCode']})"
    return str(st["Status"]).capitalize()


def logs(root: str, name: str, *, follow: bool = False, since: str | None = None,
         tail: int = -1, until: str | None = None) -> Iterator[dict[str, Any]]:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    path = logfile.log_path(paths.cdir(name))

    def alive() -> bool:
        rec = state.load_record(paths.cdir(name))
        return bool(rec) and rec is not None and (
            rec["State"]["Status"] in ACTIVE or monitor_alive(rec))
    return logfile.follow(path, alive if follow else None,
                    since=logfile.parse_since(since) if since else 0.0, tail=tail,
                    until=logfile.parse_since(until, "--until") if until else 0.0)


def top(root: str, name: str, ps_args: list[str] | None = None) -> str:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    r = subprocess.run([*runtime(paths), "ps", name, *(ps_args or [])], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise CoveError(f"top {name}", r.stderr.strip() or "failed")
    return r.stdout


def stats(root: str, name: str) -> dict[str, Any]:
    """One sample from the runtime's cgroup layer (runc's stats JSON, under "Raw"),
    summarized as `docker stats` needs it: CPU time, memory (usage, the inactive file
    cache docker leaves out of it, and the limit: the host's memory when there is none,
    as docker shows it), pids, block I/O from the cgroup, and the network I/O of the
    container's namespace (its interfaces but lo; none on the host's network)."""
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    rec = refresh_record(paths, name)
    if rec["State"]["Status"] not in ("running", "paused"):
        raise CoveError(f"container {name}", "is not running")
    r = subprocess.run([*runtime(paths), "events", "--stats", name], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise CoveError(f"stats {name}", r.stderr.strip() or "failed")
    data = json.loads(r.stdout.splitlines()[0])["data"]
    mem = data.get("memory", {}).get("usage", {})
    raw = data.get("memory", {}).get("raw", {})
    from cove.engine.units import host_memory
    host = host_memory()
    limit = int(mem.get("limit", 0))
    bio: dict[str, int] = {"read": 0, "write": 0}
    for e in data.get("blkio", {}).get("ioServiceBytesRecursive") or []:
        op = str(e.get("op", "")).lower()
        if op in bio:
            bio[op] += int(e.get("value", 0))
    rx, tx = (0, 0) if rec["HostConfig"].get("NetworkMode") == "host" \
        else _net_io(int(rec["State"].get("Pid") or 0))
    return {"Name": name, "Id": rec["Id"], "Status": rec["State"]["Status"],
            "CPUNanos": data.get("cpu", {}).get("usage", {}).get("total", 0),
            "MemUsage": mem.get("usage", 0),
            "MemCache": int(raw.get("total_inactive_file", raw.get("inactive_file", 0))),
            "MemLimit": host if not limit or (host and limit > host) else limit,
            "Pids": data.get("pids", {}).get("current", 0),
            "BlockRead": bio["read"], "BlockWrite": bio["write"], "NetRx": rx, "NetTx": tx,
            "Raw": data}


def _net_io(pid: int) -> tuple[int, int]:
    """Bytes received and sent by the interfaces (but lo) of `pid`'s network namespace."""
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f.readlines()[2:]:
                ifname, _, rest = line.partition(":")
                cols = rest.split()
                if ifname.strip() != "lo" and len(cols) >= 9:
                    rx += int(cols[0])
                    tx += int(cols[8])
    except (OSError, ValueError):
        pass
    return rx, tx


def port(root: str, name: str) -> dict[str, list[dict[str, str]]]:
    rec = inspect_record(root, name)
    ports: dict[str, list[dict[str, str]]] = rec["NetworkSettings"].get("Ports") or {}
    return ports or rec["HostConfig"]["PortBindings"]
