"""Containers by name: create, run, start, stop, restart, kill, rm, inspect, wait, exec,
top, stats, port, logs and ps, over cove/image (rootfs, bundle) and cove-runtime.

Every container has a directory `<root>/containers/<name>/` with its record
(`container.json`, see `cove.engine.state`), its OCI bundle (`config.json` + the overlay
rootfs), its stdio FIFOs and its json-file log. A running container has a monitor
(`cove.engine.monitor`, one per state root), which also applies restart policies and
runs health checks (`cove.engine.policy`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from cove.engine import events, monctl, procs
from cove.engine import hostconfig as H
from cove.engine import logs as L
from cove.engine import state as S
from cove.engine.options import (  # re-exported: the CLI and the API name them from here
    RunOptions as RunOptions,
)
from cove.engine.options import (
    _cap,
    _check_env,
    _env_files,
    _signal_name,
    apply_caps,
    parse_publish,
    parse_volume,
)
from cove.engine.options import parse_duration as parse_duration
from cove.engine.options import parse_restart as parse_restart
from cove.engine.spawn import runtime_binary as runtime_binary
from cove.errors import CoveError

ACTIVE = ("running", "restarting", "paused")  # paused: `cove pause` (cove/engine/ops.py)
MIN_MEMORY = 6 << 20  # docker's minimum memory limit (6 MiB)


# -- helpers ----------------------------------------------------------------------------

def runtime(paths: S.Paths) -> list[str]:
    return [runtime_binary(), "--root", paths.runtime_root]


def _rt_quiet(paths: S.Paths, *args: str) -> int:
    return subprocess.call([*runtime(paths), *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def _rt_delete(paths: S.Paths, name: str) -> None:
    """`cove-runtime delete --force`, when the runtime has state for it (a run of the
    runtime costs tens of ms)."""
    if os.path.exists(os.path.join(paths.runtime_root, name, "state.json")):
        _rt_quiet(paths, "delete", "--force", name)


# -- spec -------------------------------------------------------------------------------

def _mounts(paths: S.Paths, o: RunOptions, made: list[str], rootfs: str = "",
            anon: list[str] | None = None) -> list[dict[str, Any]]:
    """-v, --mount and --tmpfs as OCI mounts (and docker-style Mounts for inspect);
    the volumes this makes (docker makes a named volume on first use) go into `made`,
    and those without a name (`-v /dst`), which go with the container, into `anon` too.
    An empty volume is filled from the image's content at its mount point (docker's
    copy-up, unless `nocopy`), from `rootfs`."""
    from cove.engine import hostconfig as H
    from cove.engine import volumes
    out: list[dict[str, Any]] = []

    def add(kind: str, src: str, dst: str, ro: bool, prop: str = "", nocopy: bool = False,
            opts: list[str] | None = None) -> None:
        if not dst.startswith("/"):
            raise CoveError(f"mount target {dst!r}", "must be an absolute path")
        if kind == "volume":
            vname = src or os.urandom(32).hex()
            existed = volumes.exists(paths.root, vname)
            vol = volumes.ensure(paths.root, vname,
                                 None if src else {"cove.anonymous": "true"})
            if not existed:
                made.append(vname)
                if not src and anon is not None:
                    anon.append(vname)
            if rootfs and not nocopy and not os.listdir(vol["Mountpoint"]):
                _copy_up(rootfs, os.path.normpath(dst), vol["Mountpoint"])
            out.append({"Type": "volume", "Name": vol["Name"], "Source": vol["Mountpoint"],
                        "Destination": dst, "RW": not ro})
        elif kind == "bind":
            if not os.path.exists(src):
                raise CoveError(f"bind source {src}", "does not exist")
            out.append({"Type": "bind", "Source": os.path.abspath(src), "Destination": dst,
                        "RW": not ro, "Propagation": prop})
        elif kind == "tmpfs":
            out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "RW": not ro,
                        "Options": opts or []})
        else:
            raise CoveError(f"mount type {kind}", "expected bind, volume or tmpfs")

    for v in o.volumes:
        src, dst, ro, prop = parse_volume(v)
        nocopy = "nocopy" in v.split(":")[2].split(",") if v.count(":") == 2 else False
        add("bind" if src.startswith(("/", ".")) else "volume", src, dst, ro, prop, nocopy)
    for m in o.mounts:
        kv: dict[str, str] = {}
        ro = False
        for item in m.split(","):
            k, eq, val = item.partition("=")
            if k in ("readonly", "ro") and (not eq or val in ("1", "true")):
                ro = True
            else:
                kv[k] = val
        dst = kv.get("target") or kv.get("destination") or kv.get("dst") or ""
        topts = [f"size={kv['tmpfs-size']}"] if kv.get("tmpfs-size") else []
        if kv.get("tmpfs-mode"):
            topts.append(f"mode={kv['tmpfs-mode']}")
        nocopy = "volume-nocopy" in kv and kv["volume-nocopy"] in ("", "1", "true")
        add(kv.get("type", "volume"), kv.get("source") or kv.get("src") or "", dst, ro,
            nocopy=nocopy, opts=H.parse_tmpfs(f"{dst}:{','.join(topts)}")[1] if topts else [])
    for t in o.tmpfs:
        tdst, topts = H.parse_tmpfs(t)
        add("tmpfs", "", tdst, False, opts=topts)
    return out


def _oci_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in mounts:
        if m["Type"] == "tmpfs":
            from cove.engine.hostspec import tmpfs_options
            out.append({"destination": m["Destination"], "type": "tmpfs", "source": "tmpfs",
                        "options": tmpfs_options(m.get("Options") or [], not m["RW"])})
        else:
            out.append({"destination": m["Destination"], "type": "bind",
                        "source": m["Source"],
                        "options": ["rbind", "rw" if m["RW"] else "ro",
                                    *([m["Propagation"]] if m.get("Propagation") else [])]})
    return out


def build_spec(paths: S.Paths, rec: dict[str, Any], o: RunOptions, rootfs: str,
               cfg: object) -> dict[str, Any]:
    from cove.image.bundle import image_spec
    hc = rec["HostConfig"]
    spec: dict[str, Any] = image_spec(cfg, rootfs, args=o.command, entrypoint=o.entrypoint,
                      env=[*_env_files(o.env_files), *o.env], workdir=o.workdir,
                      user=o.user, terminal=o.tty, hostname=rec["Config"]["Hostname"])
    lin = spec.setdefault("linux", {})
    if o.isolation:
        # cove-runtime picks its handler from this annotation (docs/isolation.md).
        spec.setdefault("annotations", {})["io.cove.isolation"] = o.isolation
    spec["root"]["readonly"] = o.read_only
    spec["mounts"] = [*spec.get("mounts", []), *_oci_mounts(rec["Mounts"])]
    res = lin.setdefault("resources", {})
    if hc["Memory"]:
        res["memory"] = {"limit": hc["Memory"]}
    if hc["NanoCpus"]:
        res["cpu"] = {"quota": hc["NanoCpus"] // 10_000, "period": 100_000}
    if hc["PidsLimit"]:
        res["pids"] = {"limit": hc["PidsLimit"]}
    apply_caps(spec["process"], o.cap_add, o.cap_drop)
    if "seccomp" in lin:
        # docker's profile allows some syscalls only with a capability (chroot with
        # CAP_SYS_CHROOT, mount and unshare with CAP_SYS_ADMIN...): made for these caps
        from cove.oci.seccomp_default import default_profile
        lin["seccomp"] = default_profile(spec["process"]["capabilities"]["bounding"])
    if "devices" in res:
        # docker lets a container mknod any device node (MKNOD is one of its caps);
        # opening one still needs a rule that allows reading or writing it
        res["devices"] += [{"allow": True, "type": t, "access": "m"} for t in ("c", "b")]
    for so in o.security_opt:
        k, _, v = so.partition("=")
        if k == "seccomp" and v == "unconfined":
            lin.pop("seccomp", None)
        elif k == "seccomp":
            with open(v) as f:
                lin["seccomp"] = json.load(f)
        elif k == "no-new-privileges":
            spec["process"]["noNewPrivileges"] = v in ("", "true")
        else:
            raise CoveError(f"--security-opt {so}", "expected seccomp=FILE|unconfined")
    from cove.engine import hostconfig, hostspec
    hostspec.apply(paths.root, spec, rec)
    mode = hc["NetworkMode"]
    from cove.engine import rootless
    if mode == "host":
        lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "network"]
    elif mode == "none" or rootless.is_slirp(mode):
        # its own namespace, made by the runtime (rootless: in the container's user
        # namespace); slirp4netns is attached by a hook (cove/engine/rootless.py)
        rootless.spec_network(spec, paths, rec)
    else:
        from cove.engine import network
        nsfile = network.netns_path(paths, rec["Name"])
        for n in lin["namespaces"]:
            if n["type"] == "network":
                n["path"] = nsfile
    if hostconfig.own_etc(rec):
        # (written by network.attach on a bridge network, by create on none and host)
        for etc in ("hosts", "resolv.conf"):
            spec["mounts"].append({"destination": f"/etc/{etc}", "type": "bind",
                                   "source": os.path.join(paths.cdir(rec["Name"]), etc),
                                   "options": ["rbind", "rw"]})
    return spec


# -- records ----------------------------------------------------------------------------

def _new_record(cid: str, name: str, o: RunOptions, digest: str,
                argv: list[str]) -> dict[str, Any]:
    H.check_signal(o.stop_signal)
    lc: dict[str, str] = {}
    for opt in o.log_opts:
        k, _, v = opt.partition("=")
        if k not in ("max-size", "max-file"):
            raise CoveError(f"--log-opt {opt}", "json-file takes max-size and max-file")
        lc[k] = v
    if "max-size" in lc:
        L.parse_size(lc["max-size"])
    # a default cap, as docker's `local` driver has (a chatty container must not fill
    # the disk the whole engine lives on): --log-opt max-size=0 for none
    lc.setdefault("max-size", L.DEFAULT_MAX_SIZE)
    lc.setdefault("max-file", L.DEFAULT_MAX_FILE if lc["max-size"] != "0" else "1")
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
    from cove.engine.logs import parse_size
    try:
        mem = parse_size(o.memory) if o.memory else 0
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
    hc = H.host_config(o, net, mem)
    return {
        "Id": cid, "Name": name, "Created": S.now_rfc3339(), "Image": o.image,
        "ImageDigest": digest, "Path": argv[0] if argv else "", "Args": argv[1:],
        "Config": {"Hostname": o.hostname or cid[:12], "Cmd": o.command, "Tty": o.tty,
                   "Env": o.env, "Healthcheck": health, "StopSignal": o.stop_signal,
                   "StopTimeout": o.stop_timeout,
                   "Labels": H.parse_labels(o.labels, o.label_files)},
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


def refresh(paths: S.Paths, name: str) -> dict[str, Any]:
    """The record, corrected where its processes are gone without a word (its monitor
    killed while the container exited; the host's process tree restarted): the exit code
    is the one the zygote wrote (it reaps the init of a dead monitor), else 255."""
    cdir = paths.cdir(name)
    rec = S.load(cdir, strict=True)
    if rec is None:
        raise CoveError(f"container {name}", "no such container")
    st = rec["State"]
    if st["Status"] in ("running", "paused") and not _monitor_alive(rec) \
            and S.pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
        # nobody copies its output (its monitor and keeper were killed, or stopped with
        # `supervisor stop`): once the pipe is full the container would block writing
        with contextlib.suppress(CoveError, OSError):
            if os.path.exists(os.path.join(cdir, "stdout.fifo")):
                monctl.request(paths.root, "adopt", name)
                rec = S.load(cdir, strict=True) or rec
    elif st["Status"] in ("running", "paused") and not _monitor_alive(rec):
        # (a `run -it` has no monitor and no Pid: its foreground `cove run` watches it)
        code = procs.read_exit(cdir, int(st.get("Pid") or 0))
        if code is None and _zygote_alive(rec):
            # it reaps the orphaned init and writes the code: a moment
            import time
            deadline = time.monotonic() + 2.0
            while code is None and time.monotonic() < deadline:
                time.sleep(0.05)
                code = procs.read_exit(cdir, int(st.get("Pid") or 0))

        corrected = False

        def lost(r: dict[str, Any]) -> None:
            # checked again under the lock: its watcher may have recorded the exit (or a
            # new one started it) since we read the record
            nonlocal corrected
            if r["State"]["Status"] not in ("running", "paused") or _monitor_alive(r):
                return
            corrected = True
            r["State"].update(Status="exited", Running=False, Pid=0,
                              ExitCode=255 if code is None else code,
                              FinishedAt=S.now_rfc3339(),
                              Error="exited while no monitor watched it; exit code lost"
                              if code is None else "")
            r["MonitorPid"] = 0
            r.pop("Watchers", None)
        rec = S.update(cdir, lost)
        if not corrected:
            rec["LogPath"] = L.log_path(cdir)
            return rec
        _rt_delete(paths, name)
        cleanup(paths, name)
        events.emit(paths.root, "container", "die", rec, exitCode=rec["State"]["ExitCode"])
        if rec["HostConfig"].get("AutoRemove"):
            with contextlib.suppress(CoveError):
                remove(paths.root, name, force=True)
            rec["State"]["Status"] = "removed"
    rec["LogPath"] = L.log_path(cdir)
    return rec


def cleanup(paths: S.Paths, name: str) -> None:
    """After a run: the network torn down, the rootfs unmounted (kept for a restart)."""
    from cove.engine import teardown as T
    T.cleanup(paths, name, S.load(paths.cdir(name)) or {})


def _zygote_alive(rec: dict[str, Any]) -> bool:
    pid = int(rec.get("ZygotePid") or 0)
    return pid > 0 and S.pid_alive(pid, rec.get("ZygoteStart"))


def _monitor_alive(rec: dict[str, Any]) -> bool:
    """Whether a process watches the container and will record its exit: its monitor,
    or (`Watchers`, pid and start time) the foreground `cove run -it` and the runtime
    relaying its terminal, which run it without a monitor. While one lives the record
    is its to finish: `ps`, `inspect` and the monitor must not correct it."""
    if any(S.pid_alive(int(pid), start) for pid, start in rec.get("Watchers") or ()):
        return True
    pid = int(rec.get("MonitorPid") or 0)
    if pid <= 0 or not S.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "cove-monitor"
    except OSError:
        return False


# -- lifecycle --------------------------------------------------------------------------

def create(root: str, o: RunOptions) -> dict[str, Any]:
    """Prepare the rootfs, bundle and record of a new container (status `created`)."""
    from cove.engine import images
    from cove.image import snapshots
    from cove.image.store import Store
    paths = S.Paths(root)
    st = Store(root)
    S.reserve(root)  # room for stop/rm -f/exit records when a container fills the disk
    digest = images.find_image(st, o.image)
    img = H.image_for_platform(st, o.image, digest, o.platform)
    cid = os.urandom(32).hex()
    name = o.name or f"cove-{cid[:12]}"
    # everything that can be checked is, before anything is made
    check_name(name)
    if os.path.lexists(paths.cdir(name)):
        raise CoveError(f"container name {name!r}", "already in use")
    if o.cidfile and os.path.lexists(o.cidfile):
        # docker's check: the file may be another running container's
        raise CoveError(f"--cidfile {o.cidfile}", "container ID file found, make sure the "
                                                  "other container isn't running or "
                                                  "delete it")
    rec = _new_record(cid, name, o, digest, [])
    icfg = img.config.config
    rec["Config"]["Labels"] = {**icfg.labels, **rec["Config"]["Labels"]}
    exposed = [p if "/" in p else f"{p}/tcp" for p in icfg.exposed_ports]
    hc = rec["HostConfig"]
    rec["Config"]["ExposedPorts"] = {p: {} for p in dict.fromkeys(
        [*exposed, *H.parse_expose(o.expose), *hc["PortBindings"]])}
    if o.publish_all and hc["NetworkMode"] not in ("host", "none"):
        # -P: every exposed port not published otherwise, to a free host port (picked
        # at each start, as `-p PORT`); as docker, nothing on host and none
        for p in rec["Config"]["ExposedPorts"]:
            hc["PortBindings"].setdefault(p, [{"HostIp": "", "HostPort": ""}])
    rec["Config"]["Volumes"] = {v: {} for v in icfg.volumes} or None
    if hc["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        network.check_exists(paths, hc["NetworkMode"])
        network.check_ports(paths, hc["PortBindings"])
    rootfs = snapshots.prepare(st, img, name)
    made: list[str] = []
    try:
        anon: list[str] = []
        rec["Mounts"] = _mounts(paths, o, made, rootfs.path, anon)
        rec["AnonymousVolumes"] = [*anon, *_image_volumes(
            paths, rec["Mounts"], img.config.config.volumes, rootfs.path, made)]
        rec["CreatedVolumes"] = made
        spec = build_spec(paths, rec, o, rootfs.path, img.config.config)
        argv = spec["process"]["args"]
        rec["Path"], rec["Args"] = argv[0], argv[1:]
        if hc["NetworkMode"] in ("host", "none") and H.own_etc(rec):
            from cove.engine import netcontainer
            netcontainer.write_etc(paths, rec, rootfs.container_dir)
        with open(os.path.join(rootfs.container_dir, "config.json"), "w") as f:
            f.write(json.dumps(spec))  # json.dump encodes in Python, dumps in C
        S.save(rootfs.container_dir, rec)
        if o.cidfile:
            with open(o.cidfile, "x") as f:
                f.write(cid)
    except OSError as e:
        snapshots.release(st, name, remove=True)
        _drop_volumes(root, made)
        from cove.errors import os_why
        raise CoveError(f"create {name}", os_why(e)) from None
    except BaseException:
        snapshots.release(st, name, remove=True)
        _drop_volumes(root, made)
        raise
    events.emit(root, "container", "create", rec)
    return rec


def _image_volumes(paths: S.Paths, mounts: list[dict[str, Any]], wanted: list[str],
                   rootfs: str, made: list[str]) -> list[str]:
    """An anonymous volume for each of the image's `Volumes` that no -v/--mount covers,
    filled (as docker does) with what the image has there; added to `mounts` and `made`.
    Returns their names (removed with the container)."""
    from cove.engine import volumes
    taken = {os.path.normpath(m["Destination"]) for m in mounts}
    out: list[str] = []
    for v in wanted:
        dst = os.path.normpath("/" + v.lstrip("/"))
        if dst in taken:
            continue
        taken.add(dst)
        vname = os.urandom(32).hex()
        vol = volumes.ensure(paths.root, vname, {"cove.anonymous": "true"})
        made.append(vname)
        out.append(vname)
        _copy_up(rootfs, dst, vol["Mountpoint"])
        mounts.append({"Type": "volume", "Name": vol["Name"], "Source": vol["Mountpoint"],
                       "Destination": dst, "RW": True})
    return out


def _copy_up(rootfs: str, dst: str, data: str) -> None:
    """Copy the image's content at `dst` (inside `rootfs`) into the volume dir `data`,
    owners, modes and symlinks kept; nothing when it is absent or leads out of the rootfs.
    Rootless with subordinate ids, in the containers' user namespace (it may chown to
    them; cove/image/userns.py)."""
    from cove.image import userns
    userns.call(_copy_up_here, rootfs, dst, data)


def _copy_up_here(rootfs: str, dst: str, data: str) -> None:
    base = os.path.realpath(rootfs)
    src = os.path.realpath(os.path.join(base, dst.lstrip("/")))
    if not src.startswith(base + os.sep) or not os.path.isdir(src):
        return
    shutil.copytree(src, data, symlinks=True, dirs_exist_ok=True)
    shutil.copystat(src, data)
    st = os.lstat(src)
    os.chown(data, st.st_uid, st.st_gid)
    for dirpath, dirs, files in os.walk(src):
        for n in (*dirs, *files):
            s = os.path.join(dirpath, n)
            st = os.lstat(s)
            os.lchown(os.path.join(data, os.path.relpath(s, src)), st.st_uid, st.st_gid)


def _drop_volumes(root: str, names: list[str]) -> None:
    """Remove volumes a failed `run` made implicitly (and nobody else uses)."""
    from cove.engine import volumes
    for v in names:
        with contextlib.suppress(CoveError, OSError):
            volumes.remove(root, v)


def check_name(name: str) -> None:
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            or name.startswith((".", "-")):
        raise CoveError(f"--name {name!r}", "use letters, digits, '-', '_' and '.'")


def start(root: str, name: str, *, policy_restart: bool = False) -> dict[str, Any]:
    """Start a created or exited container under a new monitor."""
    from cove.image import snapshots
    from cove.image.store import Store
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    cdir = paths.cdir(name)
    rec = refresh(paths, name)
    if rec["State"]["Status"] == "running":
        return rec
    if rec["State"]["Status"] == "paused":
        raise CoveError(f"container {name}", "cannot start a paused container, try "
                                             "unpause instead")

    def prep(r: dict[str, Any]) -> None:
        r["ManuallyStopped"] = False
        r["State"]["Status"] = "restarting" if policy_restart else r["State"]["Status"]
    if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        network.check_ports(paths, rec["HostConfig"]["PortBindings"], name)
    S.update(cdir, prep)
    _rt_delete(paths, name)
    snapshots.remount(Store(root), name)
    if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        try:
            network.attach(paths, name)
        except BaseException:
            teardown(paths, name)
            snapshots.release(Store(root), name, remove=False)
            S.update(cdir, lambda r: r["State"].update(Status="exited"))
            raise
    try:
        spawn_monitor(root, name)
    except BaseException:
        if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
            teardown(paths, name)
        snapshots.release(Store(root), name, remove=False)
        raise
    # (a policy's restart is counted by the monitor once it ran: cove/engine/policy.py)
    return refresh(paths, name)


def spawn_monitor(root: str, name: str, adopt: bool = False) -> None:
    """Have the root's monitor (cove/engine/monitor.py; started with its keeper when
    none runs) start the container, or with `adopt` watch a running one whose monitor
    died, and wait for its word."""
    rt = runtime_binary()
    env = {**os.environ, "COVE_RUNTIME": os.path.abspath(rt) if os.sep in rt else rt}
    line = monctl.request(root, "adopt" if adopt else "start", name, env)
    if line != "ok" and not adopt:
        raise CoveError(f"container {name}", line.removeprefix("error: ") or
                        "its monitor died while starting it")


def adopt(root: str, name: str) -> None:
    """Have the monitor watch a running container whose monitor died: the log flows
    again."""
    spawn_monitor(root, name, adopt=True)


def run(root: str, o: RunOptions, out: Any = None, err: Any = None, *,
        stdin: int | None = None, sig_proxy: bool = False) -> tuple[dict[str, Any], int]:
    """create + start; attached (not `detach`), copy its output to `out`/`err` until it
    exits and return its exit code (and remove it with `rm`).

    With `interactive`, the fd `stdin` (ours by default) is the container's stdin until
    its EOF, which the container sees (`printf ... | cove run -i IMAGE wc -l`); without,
    the container's stdin is /dev/null, as docker's. With `sig_proxy` (the CLI's, as
    docker's --sig-proxy), the signals that would end this process (^C on its terminal,
    a kill) go to the container instead: it decides, and the run ends with it; without
    (the Python API), ^C stops the container."""
    if o.tty and not o.detach:
        if o.interactive and not os.isatty(0):
            # the runtime would relay a pipe to a pty whose reader never sees its EOF
            raise CoveError("run -it", "the input device is not a TTY")
        return run_tty(root, o)
    if o.tty:
        raise CoveError("run -t -d", "a detached container gets no terminal here; drop -t")
    paths = S.Paths(root)
    rec = create(root, o)
    name = rec["Name"]
    fifo: tuple[str, int, int] | None = None
    try:
        if o.interactive and not o.detach:
            fifo = _stdin_fifo(paths.cdir(name))
        elif o.interactive:
            # `run -d -i`: docker's OpenStdin; the container keeps its stdin FIFO open
            # (procs.open_stdin) and `cove attach` writes to it
            S.update(paths.cdir(name), lambda r: r["Config"].update(OpenStdin=True))
        rec = start(root, name)
    except BaseException:
        if fifo is not None:
            os.close(fifo[1])
            os.close(fifo[2])
        with contextlib.suppress(Exception):
            remove(root, name, force=True)
        _drop_volumes(root, rec.get("CreatedVolumes") or [])
        if o.cidfile:
            with contextlib.suppress(OSError):
                os.unlink(o.cidfile)
        failed = sys.exc_info()[1]
        if isinstance(failed, CoveError):
            # a command that can't be run: docker's message and exit status (126/127)
            mapped = H.exec_error(failed)
            if mapped is not None:
                raise mapped from None
        raise
    if o.detach:
        return rec, 0
    if fifo is not None:
        # the container holds the read end now: ours goes, and so does the FIFO (a
        # later start gets /dev/null, as docker's restarted containers)
        path, placeholder, w = fifo
        os.close(placeholder)
        with contextlib.suppress(OSError):
            os.unlink(path)
        import threading
        threading.Thread(target=_feed_stdin, args=(0 if stdin is None else stdin, w),
                         name=f"stdin {name}", daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        _rt_quiet(paths, "kill", name, str(signum))
    try:
        with _signals(forward if sig_proxy else None):
            for e in logs(root, name, follow=True):
                stream = (err or sys.stderr) if e["stream"] == "stderr" \
                    else (out or sys.stdout)
                stream.write(e["log"])
                stream.flush()
            code = wait(root, name)
    except KeyboardInterrupt:
        stop(root, name, timeout=10)
        code = 130
    except BrokenPipeError:
        # our reader left (`cove run IMAGE yes | head -1`): the container ends, as the
        # program would in the pipeline (by SIGKILL: an init ignores SIGPIPE), rather
        # than write to its log for ever, and --rm removes it
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        _wait_status(paths, name, 10)
        if o.rm:
            remove(root, name, force=True)
        raise
    if o.rm:
        remove(root, name, force=True)
    return rec, code


# The signals an attached `cove run` passes on (docker's --sig-proxy, the runtime's own
# list): those that would end it and leave its container running behind it.
PROXIED = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM


@contextlib.contextmanager
def _signals(handler: Any, which: tuple[int, ...] = PROXIED) -> Iterator[None]:
    """`handler` for `which` while the block runs; nothing when `handler` is None or
    outside the main thread (only it may set handlers: a program using the API from a
    thread keeps its own)."""
    import signal
    import threading
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    try:
        for s in which:
            old[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _ignore(_signum: int, _frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN, which the runtime and the container
    would inherit, a handler is reset to the default at exec."""


def _stdin_fifo(cdir: str) -> tuple[str, int, int]:
    """`run -i`: `<cdir>/stdin.fifo`, which the monitor gives the container as its stdin
    (cove/engine/monitor.py), and its write end, opened now so that the container never
    finds the FIFO without a writer (a read would be an EOF at once). A placeholder read
    end lets the write end open without blocking; the caller closes it once the
    container holds its own. (path, placeholder, write end)."""
    path = os.path.join(cdir, procs.STDIN_FIFO)
    os.mkfifo(path, 0o600)
    placeholder = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        w = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(placeholder)
        raise
    return path, placeholder, w


def _feed_stdin(src: int, w: int) -> None:
    """Copy `src` into the container's stdin until `src` ends, then close it: the
    container reads EOF (docker's StdinOnce). A container that exits (or closes its
    stdin) first ends the copy with EPIPE (Python ignores SIGPIPE)."""
    try:
        while data := os.read(src, 65536):
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
    except OSError:
        pass
    finally:
        os.close(w)


def run_tty(root: str, o: RunOptions) -> tuple[dict[str, Any], int]:
    """`run -it`: the runtime's own foreground run relays the terminal; the record shows
    the container while it runs. No monitor watches it: this process and the runtime
    are its watchers (`Watchers` in the record, pid and start time), so that `ps`,
    `inspect` and the monitor know it is watched and leave it alone (they correct
    only a running container nobody watches), and its exit is recorded here.

    Signals: the terminal is raw, so ^C and ^\\ are bytes for the container's terminal;
    a hangup reaches the runtime (our process group) too, which passes it on. So this
    process ignores SIGINT, SIGQUIT and SIGHUP (`_ignore`) rather than die and leave the exit
    unrecorded, and passes SIGTERM, SIGUSR1 and SIGUSR2 (a kill, never the terminal's)
    to the runtime, which passes them on to the container. Without -i the container's
    stdin is not ours (docker attaches none): the runtime gets /dev/null."""
    from cove.image import snapshots
    from cove.image.store import Store
    from cove.runtime.state import proc_start_time
    paths = S.Paths(root)
    rec = create(root, o)
    name = rec["Name"]
    cdir = paths.cdir(name)
    me = os.getpid()
    code, error = 255, ""

    def running(r: dict[str, Any]) -> None:
        r["State"].update(Status="running", Running=True, StartedAt=S.now_rfc3339(),
                          ExitCode=0, Error="", FinishedAt="0001-01-01T00:00:00Z")
        r["Watchers"] = [[me, proc_start_time(me)]]
    try:
        if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
            from cove.engine import network
            network.attach(paths, name)
        S.update(cdir, running)
        events.emit(root, "container", "start", rec)
        with _signals(_ignore, (1, 2, 3)):
            p = subprocess.Popen([*runtime(paths), "run", "--bundle", cdir, name],
                                 stdin=None if o.interactive else subprocess.DEVNULL)

            def watched(r: dict[str, Any]) -> None:
                r["Watchers"] = [*(r.get("Watchers") or []), [p.pid, proc_start_time(p.pid)]]

            def forward(signum: int, _frame: object) -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)
            with _signals(forward, (10, 12, 15)):
                with contextlib.suppress(CoveError):
                    S.update(cdir, watched)
                code = p.wait()
        if code < 0:
            code = 128 - code  # the runtime killed by a signal: as a shell says it
    except BaseException as e:
        error = str(e) or type(e).__name__  # it never ran, or we were interrupted
        raise
    finally:
        _rt_delete(paths, name)
        with contextlib.suppress(Exception):
            teardown(paths, name)
        snapshots.release(Store(root), name, remove=False)

        def done(r: dict[str, Any]) -> None:
            r["State"].update(Status="exited", Running=False, Pid=0, ExitCode=code,
                              FinishedAt=S.now_rfc3339(), Error=error)
            r.pop("Watchers", None)
        with contextlib.suppress(CoveError):  # removed meanwhile (`cove rm -f`)
            rec = S.update(cdir, done)
        events.emit(root, "container", "die", rec, exitCode=code)
        if o.rm:
            with contextlib.suppress(CoveError):
                remove(root, name, force=True)
    return rec, code


def _wait_status(paths: S.Paths, name: str, timeout: float | None) -> bool:
    """Wait until the container is no longer active; whether it got there in time. A
    record that is gone counts as stopped: a `--rm -d` container is removed by its
    monitor the moment it exits, which `stop` must not report as "no such container"."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            rec = refresh(paths, name)
        except S.CorruptRecord:
            raise
        except CoveError:
            if not os.path.exists(os.path.join(paths.cdir(name), S.RECORD)):
                return True
            raise
        if rec["State"]["Status"] not in ACTIVE:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        nap(rec, None if deadline is None else deadline - time.monotonic())


def nap(rec: dict[str, Any], left: float | None) -> None:
    """Wait until the record may have changed: while its init runs, on the init's pidfd
    (readable the moment it exits; up to 0.5 s, since a restart or an adoption may
    change the pid); after that in 5 ms steps while the monitor records the exit. A
    fixed 50 ms poll cost `cove.run()` ~25 ms on average for a short command."""
    import select
    st = rec["State"]
    pid = int(st.get("Pid") or 0)
    limit = 0.5 if left is None else max(0.0, min(0.5, left))
    if st["Status"] == "running" and S.pid_alive(pid, st.get("PidStart")):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                select.select([fd], [], [], limit)
            finally:
                os.close(fd)
            return
    time.sleep(min(0.005, limit))


def kill(root: str, name: str, sig: str | int = "KILL", *, manual: bool = True) -> None:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    rec = refresh(paths, name)
    if rec["State"]["Status"] not in ("running", "paused"):
        raise CoveError(f"container {name}", "is not running")
    if manual:
        S.update(paths.cdir(name), lambda r: r.update(ManuallyStopped=True))
    r = subprocess.run([*runtime(paths), "kill", name, _signal_name(sig)],
                       capture_output=True, text=True)
    if rec["State"]["Status"] == "paused":  # frozen, it would not act on it
        _after_signal(paths, name, rec, sig)
    if r.returncode != 0 and S.pid_alive(int(rec["State"]["Pid"]), rec["State"]["PidStart"]):
        raise CoveError(f"kill {name}", r.stderr.strip())
    events.emit(root, "container", "kill", rec, signal=_signal_name(sig))


def _after_signal(paths: S.Paths, name: str, rec: dict[str, Any], sig: str | int) -> None:
    """A signal was sent to a paused container: frozen, it would not act on it. As
    docker, SIGKILL and the stop signal thaw it (so `stop`, `kill` and `rm -f` work);
    another signal waits, pending, for `unpause`."""
    if rec["State"]["Status"] != "paused":
        return
    want = {"KILL", "9", _signal_name(rec["Config"].get("StopSignal") or "TERM")}
    if _signal_name(sig) in want:
        if _rt_quiet(paths, "resume", name) == 0:
            def thawed(r: dict[str, Any]) -> None:
                r["State"]["Paused"] = False  # (also when it exited meanwhile: a SIGKILL)
                if r["State"]["Status"] == "paused":
                    r["State"]["Status"] = "running"
            S.update(paths.cdir(name), thawed)


def stop(root: str, name: str, timeout: float | None = None) -> None:
    """The stop signal, then SIGKILL after `timeout` seconds (None: the container's
    --stop-timeout, else 10; -1 waits for ever, as docker); waits for the exit."""
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    S.update(paths.cdir(name), lambda r: r.update(ManuallyStopped=True))
    rec = refresh(paths, name)
    if timeout is None:
        own = rec["Config"].get("StopTimeout")
        timeout = 10.0 if own is None else float(own)
    if timeout < 0:
        timeout = None
    if rec["State"]["Status"] == "restarting":
        S.update(paths.cdir(name), lambda r: r["State"].update(Status="exited"))
    if rec["State"]["Status"] not in ("running", "paused"):
        return
    with contextlib.suppress(CoveError):
        kill(root, name, rec["Config"].get("StopSignal") or "TERM")
    if not _wait_status(paths, name, timeout):
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        _wait_status(paths, name, 10)
    events.emit(root, "container", "stop", rec)


def restart(root: str, name: str, timeout: float | None = None) -> dict[str, Any]:
    stop(root, name, timeout)
    rec = start(root, name)
    events.emit(root, "container", "restart", rec)
    return rec


def wait(root: str, name: str, timeout: float | None = None) -> int:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    if not _wait_status(paths, name, timeout):
        raise CoveError(f"wait {name}", "timed out")
    return int(refresh(paths, name)["State"]["ExitCode"])


def remove(root: str, name: str, force: bool = False) -> str:
    from cove.image import snapshots
    from cove.image.store import Store
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    try:
        rec = refresh(paths, name)
    except S.CorruptRecord:
        if not force:
            raise
        _remove_unreadable(paths, name)
        return name
    if rec["State"]["Status"] in ACTIVE:
        if not force:
            raise CoveError(f"container {name}", "is running: stop it first or use -f")
        S.update(paths.cdir(name), lambda r: r.update(ManuallyStopped=True))
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        _wait_status(paths, name, 10)
    # the monitor may still be finishing (log drain, teardown): let it
    deadline = time.monotonic() + 5
    while _monitor_alive(S.load(paths.cdir(name)) or {}) and time.monotonic() < deadline:
        time.sleep(0.05)
    _rt_delete(paths, name)
    with contextlib.suppress(Exception):
        teardown(paths, name)
    snapshots.release(Store(root), name, remove=True)
    _drop_volumes(root, rec.get("AnonymousVolumes") or [])
    events.emit(root, "container", "destroy", rec)
    return name


def _remove_unreadable(paths: S.Paths, name: str) -> None:
    """`rm -f` of a container whose record can't be read: what the runtime, the
    network and the snapshot know is enough to stop and remove it."""
    from cove.image import snapshots
    from cove.image.store import Store
    cdir = paths.cdir(name)
    _rt_delete(paths, name)  # kills the init (the runtime's state has its pid)
    try:
        with open(os.path.join(cdir, S.RECORD), "rb") as f:
            text = f.read().decode(errors="replace")
        at = text.find('"Id"')
        cid = text[at:at + 90].split('"')[3] if at >= 0 else ""
    except (OSError, IndexError):
        cid = ""
    if len(cid) == 64 and all(c in "0123456789abcdef" for c in cid):
        from cove.engine import network
        network.drop_port_table(cid)
    with contextlib.suppress(Exception):
        from cove.engine import network
        network.detach(paths, name)
    snapshots.release(Store(paths.root), name, remove=True)


def teardown(paths: S.Paths, name: str) -> None:
    """Undo what start set up outside the runtime (the container's network)."""
    rec = S.load(paths.cdir(name)) or {}
    if rec.get("HostConfig", {}).get("NetworkMode") in ("host", "none"):
        return
    from cove.engine import network
    network.detach(paths, name)


# -- queries ----------------------------------------------------------------------------

def inspect(root: str, name: str, notify: Callable[[str], None] | None = None
            ) -> dict[str, Any]:
    """The container's record, corrected (refresh); a monitor it relies on is
    started again if it died (`notify` hears of it: the CLI prints it)."""
    paths = S.Paths(root)
    was = monctl.running(root) > 0
    rec = refresh(paths, S.lookup(paths, name))  # (adopting a running container may
    if needs_monitor(rec) and not was and revive_monitor(root) and notify:  # start one)
        notify(REVIVED)
    return rec


def ps(root: str, all: bool = False,
       notify: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The containers' records (running ones, or `all`), corrected. A record that can't
    be read is skipped and `notify` hears why (one line: the CLI prints it); so it does
    when a dead monitor that a container relies on is started again."""
    paths = S.Paths(root)
    out = []
    supervised = False
    was = monctl.running(root) > 0
    for n in S.all_names(paths):
        try:
            rec = refresh(paths, n)
        except S.CorruptRecord as e:
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


def needs_monitor(rec: dict[str, Any]) -> bool:
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


def up_line(rec: dict[str, Any]) -> str:
    """`ps`'s STATUS of a running or paused container: "Up 5 seconds (Paused)"."""
    st = rec["State"]
    from cove.engine.units import human_duration
    line = "Up " + human_duration(time.time() - S.parse_rfc3339(st["StartedAt"]))
    if st["Status"] == "paused":
        return line + " (Paused)"
    h = (st.get("Health") or {}).get("Status")
    return line + (f" ({h})" if h else "")


def status_line(rec: dict[str, Any]) -> str:
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
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    path = L.log_path(paths.cdir(name))

    def alive() -> bool:
        rec = S.load(paths.cdir(name))
        return bool(rec) and rec is not None and (
            rec["State"]["Status"] in ACTIVE or _monitor_alive(rec))
    return L.follow(path, alive if follow else None,
                    since=L.parse_since(since) if since else 0.0, tail=tail,
                    until=L.parse_since(until, "--until") if until else 0.0)


def exec_(root: str, name: str, cmd: list[str], *, tty: bool = False,
          interactive: bool = False, detach: bool = False, env: list[str] | None = None,
          user: str | None = None, workdir: str | None = None) -> int:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    rec = refresh(paths, name)
    if rec["State"]["Status"] != "running":
        raise CoveError(f"container {name}", "is not running")
    args = [*runtime(paths), "exec"]
    for e in env or []:
        args += ["-e", e]
    if workdir:
        args += ["--cwd", workdir]
    if user:
        args += ["-u", user]
    if detach:
        args.append("-d")
    if not tty:
        return _exec_plain([*args, name, *cmd], name, interactive)
    return _exec_tty(args, name, cmd, paths.cdir(name))


def _exec_plain(argv: list[str], name: str, interactive: bool) -> int:
    """`cove-runtime exec` with the command's stdout straight through and its stderr
    relayed, so that the runtime's own report that the command can't be run (`exec:
    'X': executable file not found in $PATH`) becomes docker's message and exit status
    (127 not found, 126 not invocable) instead of a runtime line and status 1. Only the
    runtime's lines (`cove-runtime: ...`) are held back until the end; the command's
    stderr passes at once."""
    from cove.engine.hostconfig import exec_error
    p = subprocess.Popen(argv, stdin=None if interactive else subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    assert p.stderr is not None
    held: list[bytes] = []
    err = sys.stderr.buffer
    for line in p.stderr:
        if line.startswith(b"cove-runtime: "):
            held.append(line)
            continue
        err.write(line)
        err.flush()
    code = p.wait()
    if code != 0 and held:
        text = held[-1].decode(errors="replace").strip().removeprefix("cove-runtime: ")
        mapped = exec_error(CoveError(f"container {name}", text))
        if mapped is not None:
            err.write(b"".join(held[:-1]))
            err.flush()
            raise mapped
    err.write(b"".join(held))
    err.flush()
    return code


def _exec_tty(args: list[str], name: str, cmd: list[str], cdir: str) -> int:
    import socket

    from cove.runtime.caller import relay as _relay
    path = os.path.join(cdir, f"console-{os.getpid()}.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        p = subprocess.Popen([*args, "-t", "--console-socket", path, name, *cmd])
        conn, _ = srv.accept()
        _msg, anc, _f, _a = conn.recvmsg(4096, socket.CMSG_SPACE(4))
        conn.close()
        master = -1
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                master = int.from_bytes(data[:4], "little")
        if master < 0:
            return p.wait()
        try:
            _relay(master, p.pid)
        finally:
            os.close(master)
        return p.wait()
    finally:
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def top(root: str, name: str, ps_args: list[str] | None = None) -> str:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
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
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    rec = refresh(paths, name)
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
    rec = inspect(root, name)
    ports: dict[str, list[dict[str, str]]] = rec["NetworkSettings"].get("Ports") or {}
    return ports or rec["HostConfig"]["PortBindings"]


def stop_all(root: str) -> None:
    """Stop every running container (tests, `cove system reset`)."""
    for rec in ps(root):
        with contextlib.suppress(CoveError):
            stop(root, rec["Name"], 2)

