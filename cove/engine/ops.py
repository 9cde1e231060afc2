"""Container operations beyond the life cycle: pause/unpause, rename, update, and the
docker-style durations `ps` shows.

Pause is the runtime's (the cgroup freezer); the record says `paused` (docker's
State.Status, with Running and Paused true) so that `ps` shows "Up N seconds
(Paused)" and `stop`/`kill` know to thaw it: a frozen process never handles the
signal it is sent (containers.kill resumes it after the stop signal or SIGKILL, as
docker does).

Rename moves what is keyed by the name: the container's directory (record, bundle,
rootfs, log), the runtime's state directory (its id is the name), and the container's
entry in its network (other members' /etc/hosts). A running container's monitor was
started under the old name and keeps using the old path until the container exits, so
`containers/OLD` stays behind as a symlink to `NEW` (hidden from listings and lookups)
and the log keeps its file, reached through `NEW-json.log -> OLD-json.log`; the
monitor settles both when the run ends (teardown.settle_rename).

Update changes the limits in three places: the runtime's cgroup (`cove-runtime
update`) when it runs, the bundle's config.json (a restart starts from it) and the
record (inspect's HostConfig).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from cove.engine import containers, events, state
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import HostConfig, Record

LIVE = ("running", "paused")


# -- docker's durations -----------------------------------------------------------------



# -- pause / unpause --------------------------------------------------------------------

def _runtime(paths: state.Paths, *args: str, input: str | None = None) -> None:
    r = subprocess.run([*containers.runtime(paths), *args], capture_output=True, text=True,
                       input=input)
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1:] or [f"exit status {r.returncode}"]
        raise CoveError(f"{args[0]} {args[-1]}", why[0].removeprefix("cove-runtime: "))


def pause(root: str, ref: str) -> str:
    """Freeze every process of a running container (docker pause)."""
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    rec = containers.refresh_record(paths, name)
    status = rec["State"]["Status"]
    if status == "paused":
        raise CoveError(f"container {name}", "is already paused")
    if status != "running":
        raise CoveError(f"container {name}", "is not running")
    _runtime(paths, "pause", name)

    def paused(r: Record) -> None:
        if r["State"]["Status"] == "running":  # not if it exited meanwhile
            r["State"].update({"Status": "paused", "Paused": True})
    rec = state.update_record(paths.cdir(name), paused)
    events.emit(root, "container", "pause", rec)
    return name


def unpause(root: str, ref: str) -> str:
    """Thaw a paused container (docker unpause)."""
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    rec = containers.refresh_record(paths, name)
    if rec["State"]["Status"] != "paused":
        raise CoveError(f"container {name}", "is not paused")
    _resume(paths, name)
    events.emit(root, "container", "unpause", rec)
    return name


def _resume(paths: state.Paths, name: str) -> None:
    _runtime(paths, "resume", name)

    def thawed(r: Record) -> None:
        r["State"]["Paused"] = False  # (also when it exited meanwhile: a SIGKILL)
        if r["State"]["Status"] == "paused":
            r["State"]["Status"] = "running"
    state.update_record(paths.cdir(name), thawed)


# -- rename -----------------------------------------------------------------------------

def rename(root: str, ref: str, new: str) -> str:
    """Give a container a new name (docker rename); refuses a name in use."""
    from cove.engine import teardown
    paths = state.Paths(root)
    old = state.lookup(paths, ref)
    if not new or not new.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            or new.startswith((".", "-", "_")):
        raise CoveError(f"rename {old} {new}", f"invalid container name ({new}): only "
                        "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if new == old:
        raise CoveError(f"rename {old} {new}",
                        "renaming a container with the same name as its current name")
    odir, ndir = paths.cdir(old), paths.cdir(new)
    rt_old, rt_new = (os.path.join(paths.runtime_root, n) for n in (old, new))
    lock = os.open(os.path.join(paths.root, "rename.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)  # one rename at a time: the name check holds
        if os.path.lexists(ndir) or os.path.lexists(rt_new):
            raise CoveError(f"rename {old} {new}",
                            f"the container name {new!r} is already in use")
        with state.locked(odir):  # the monitor's record updates wait
            rec = state.load_record(odir, strict=True)
            assert rec is not None
            live = rec["State"]["Status"] in (*containers.ACTIVE, "paused") \
                or containers.monitor_alive(rec)
            if os.path.isdir(rt_old):
                os.rename(rt_old, rt_new)
            os.rename(odir, ndir)
            if live:
                # its monitor (and the runtime's state: bundle, rootfs) name the old
                # path until the run ends: teardown.settle_rename removes this then
                os.symlink(new, odir)
            _move_log(ndir, old, new, live)
            _rebase_bundle(ndir, odir, ndir)
            rec["Name"] = new
            state.save(ndir, rec)
    finally:
        os.close(lock)
    if rec["HostConfig"].get("NetworkMode") not in ("host", "none"):
        from cove.engine import network
        network.rename_member(paths, old, new)
    if not live:
        teardown.settle_rename(paths, new)
    events.emit(root, "container", "rename", rec, oldName=old)
    return new


def _move_log(cdir: str, old: str, new: str, live: bool) -> None:
    """The json-file log (and its rotations) under the new name; for a running
    container the file stays (its monitor writes it by path when it rotates) and the
    new name is a symlink to it, settled when the run ends."""
    src = os.path.join(cdir, f"{old}-json.log")
    dst = os.path.join(cdir, f"{new}-json.log")
    if live:
        os.symlink(os.path.basename(src), dst)
        return
    i = 0
    while os.path.lexists(f"{src}.{i}" if i else src):
        os.rename(f"{src}.{i}" if i else src, f"{dst}.{i}" if i else dst)
        i += 1


def _rebase_bundle(cdir: str, old: str, new: str) -> None:
    """config.json names paths in the container's directory (the rootfs, the network
    namespace, the bind-mounted hosts and resolv.conf): under the new name now."""
    path = os.path.join(cdir, "config.json")
    try:
        with open(path) as f:
            spec = json.load(f)
    except FileNotFoundError:
        return

    def moved(v: Any) -> Any:
        if isinstance(v, str):
            return new + v[len(old):] if v == old or v.startswith(old + "/") else v
        if isinstance(v, list):
            return [moved(x) for x in v]
        if isinstance(v, dict):
            return {k: moved(x) for k, x in v.items()}
        return v
    state.write_atomic(path, json.dumps(moved(spec), indent=1).encode(), 0o644)


# -- update -----------------------------------------------------------------------------

def update(root: str, ref: str, *, memory: str | None = None, memory_swap: str | None = None,
           cpus: float | None = None, cpu_shares: int | None = None,
           pids_limit: int | None = None, restart: str | None = None) -> str:
    """Change a container's limits (docker update): live through the runtime when it
    runs, and in the record and bundle so that a restart keeps them."""
    from cove.engine.logs import parse_size
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    rec = containers.refresh_record(paths, name)
    hc = rec["HostConfig"]
    res: dict[str, Any] = {}
    host: HostConfig = {}
    if memory is not None:
        try:
            mem = parse_size(memory)
        except CoveError as e:
            raise CoveError(f"--memory {memory}", e.why) from None
        if 0 < mem < containers.MIN_MEMORY:
            raise CoveError(f"--memory {memory}", "minimum memory limit allowed is 6MB")
        host["Memory"] = mem
        res.setdefault("memory", {})["limit"] = mem if mem else -1
    if memory_swap is not None:
        try:
            swap = -1 if memory_swap.strip() == "-1" else parse_size(memory_swap)
        except CoveError as e:
            raise CoveError(f"--memory-swap {memory_swap}", e.why) from None
        mem = host.get("Memory", hc.get("Memory") or 0)
        if swap > 0 and (not mem or swap < mem):
            raise CoveError(f"--memory-swap {memory_swap}", "minimum memoryswap limit "
                            "should be larger than memory limit, see usage")
        host["MemorySwap"] = swap
        res.setdefault("memory", {})["swap"] = swap if swap else -1
    elif memory is not None and 0 < (hc.get("MemorySwap") or 0) < host["Memory"]:
        raise CoveError(f"--memory {memory}", "memory limit should be smaller than already "
                        "set memoryswap limit, update the memoryswap at the same time")
    if cpus is not None:
        n = len(os.sched_getaffinity(0))
        if cpus and not 0.01 <= cpus <= n:
            raise CoveError(f"--cpus {cpus:g}", f"range of CPUs is from 0.01 to {n}.00, "
                                                f"as there are only {n} CPUs available")
        host["NanoCpus"] = int(cpus * 1e9)
        res["cpu"] = {"quota": int(cpus * 100_000) if cpus else -1, "period": 100_000}
    if cpu_shares is not None:
        if cpu_shares and not 2 <= cpu_shares <= 262144:
            raise CoveError(f"--cpu-shares {cpu_shares}", "expected 2 to 262144 (or 0)")
        host["CpuShares"] = cpu_shares
        res.setdefault("cpu", {})["shares"] = cpu_shares or 1024
    if pids_limit is not None:
        host["PidsLimit"] = max(pids_limit, 0)
        res["pids"] = {"limit": pids_limit if pids_limit > 0 else -1}
    if restart is not None:
        policy = containers.parse_restart(restart)
        if hc.get("AutoRemove") and policy["Name"] != "no":
            raise CoveError(f"--restart {restart}", "restart policy cannot be updated "
                            "because AutoRemove is enabled for the container")
        host["RestartPolicy"] = policy
    if not host:
        raise CoveError(f"update {name}", "you must provide one or more flags when using "
                                          "this command")
    if res and rec["State"]["Status"] in LIVE:
        _runtime(paths, "update", "--resources", "-", name, input=json.dumps(res))
    if res:
        _update_bundle(paths.cdir(name), res)

    def record(r: Record) -> None:
        r["HostConfig"].update(host)
    rec = state.update_record(paths.cdir(name), record)
    events.emit(root, "container", "update", rec)
    return name


def _update_bundle(cdir: str, res: dict[str, Any]) -> None:
    """Fold `res` into config.json's linux.resources (-1, unlimited, drops a limit)."""
    path = os.path.join(cdir, "config.json")
    with open(path) as f:
        spec = json.load(f)
    cur = spec.setdefault("linux", {}).setdefault("resources", {})
    for section, vals in res.items():
        sec = cur.setdefault(section, {})
        for k, v in vals.items():
            if v == -1 and k != "swap":
                sec.pop(k, None)
            else:
                sec[k] = v
        if section == "cpu" and "quota" not in sec:
            sec.pop("period", None)
        if not sec:
            cur.pop(section)
    state.write_atomic(path, json.dumps(spec, indent=1).encode(), 0o644)
