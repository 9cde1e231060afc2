"""Containers by name: create, run, start, stop, restart, kill, rm, inspect, wait, exec,
top, stats, port, logs and ps, over cove/image (rootfs, bundle) and cove-runtime.

Every container has a directory `<root>/containers/<name>/` with its record
(`container.json`, see `cove.engine.state`), its OCI bundle (`config.json` + the overlay
rootfs), its stdio FIFOs and its json-file log. A running container has a monitor
(`cove.engine.monitor`); restart policies and health checks are the supervisor's
(`cove.engine.supervisor`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cove.engine import logs as L
from cove.engine import state as S
from cove.errors import CoveError

ACTIVE = ("running", "restarting")


@dataclass
class RunOptions:
    """Everything `cove run` takes; the Python API builds one too."""
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    detach: bool = False
    rm: bool = False
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)       # -v SRC:DST[:ro]
    mounts: list[str] = field(default_factory=list)        # --mount type=...,source=,target=
    tmpfs: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)       # -p [IP:]HOST:CTR[/proto]
    network: str = "default"
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    user: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    read_only: bool = False
    isolation: str = ""  # "", container, gvisor or vm: cove-runtime's handler
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    restart: str = "no"
    health_cmd: str | None = None
    health_interval: float = 30.0
    health_timeout: float = 30.0
    health_retries: int = 3
    health_start_period: float = 0.0
    health_on_failure: str = "none"
    log_opts: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    stop_signal: str = "SIGTERM"


# -- helpers ----------------------------------------------------------------------------

def runtime_binary() -> str:
    env = os.environ.get("COVE_RUNTIME")
    if env:
        return env
    cand = os.path.join(os.path.dirname(sys.executable), "cove-runtime")
    return cand if os.path.exists(cand) else "cove-runtime"


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


def parse_duration(s: str | float) -> float:
    if isinstance(s, int | float):
        return float(s)
    v = s.strip()
    for suf, mul in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if v.endswith(suf) and v[:-len(suf)].replace(".", "", 1).isdigit():
            return float(v[:-len(suf)]) * mul
    try:
        return float(v)
    except ValueError:
        raise CoveError(f"duration {s!r}", "expected e.g. 500ms, 10s, 1m") from None


def parse_restart(s: str) -> dict[str, Any]:
    name, _, n = s.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise CoveError(f"--restart {s}", "expected no, on-failure[:N], always or unless-stopped")
    if n and (name != "on-failure" or not n.isdigit()):
        raise CoveError(f"--restart {s}", "only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(n or 0)}


def parse_publish(specs: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for p in specs:
        body, _, proto = p.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise CoveError(f"-p {p}", "protocol must be tcp or udp")
        parts = body.rsplit(":", 2)
        if len(parts) == 1:
            ip, host, ctr = "", "", parts[0]
        elif len(parts) == 2:
            ip, host, ctr = "", parts[0], parts[1]
        else:
            ip, host, ctr = parts
        if not ctr.isdigit() or (host and not host.isdigit()):
            raise CoveError(f"-p {p}", "expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
        out.setdefault(f"{int(ctr)}/{proto}", []).append({"HostIp": ip, "HostPort": host})
    return out


def _env_files(files: list[str]) -> list[str]:
    out = []
    for fn in files:
        with open(fn) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line)
    return out


def _cap(c: str) -> str:
    c = c.upper()
    return c if c.startswith("CAP_") or c == "ALL" else "CAP_" + c


def _signal_name(sig: str | int) -> str:
    s = str(sig).upper()
    if s.isdigit():
        return s
    return s[3:] if s.startswith("SIG") else s


# -- spec -------------------------------------------------------------------------------

def _mounts(paths: S.Paths, o: RunOptions, made: list[str]) -> list[dict[str, Any]]:
    """-v, --mount and --tmpfs as OCI mounts (and docker-style Mounts for inspect);
    the volumes this makes (docker makes a named volume on first use) go into `made`."""
    from cove.engine import volumes
    out: list[dict[str, Any]] = []

    def add(kind: str, src: str, dst: str, ro: bool) -> None:
        if not dst.startswith("/"):
            raise CoveError(f"mount target {dst!r}", "must be an absolute path")
        if kind == "volume":
            vname = src or os.urandom(16).hex()
            existed = volumes.exists(paths.root, vname)
            vol = volumes.ensure(paths.root, vname)
            if not existed:
                made.append(vname)
            out.append({"Type": "volume", "Name": vol["Name"], "Source": vol["Mountpoint"],
                        "Destination": dst, "RW": not ro})
        elif kind == "bind":
            if not os.path.exists(src):
                raise CoveError(f"bind source {src}", "does not exist")
            out.append({"Type": "bind", "Source": os.path.abspath(src), "Destination": dst,
                        "RW": not ro})
        elif kind == "tmpfs":
            out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "RW": not ro})
        else:
            raise CoveError(f"mount type {kind}", "expected bind, volume or tmpfs")

    for v in o.volumes:
        parts = v.split(":")
        ro = len(parts) == 3 and "ro" in parts[2].split(",")
        if len(parts) == 1:
            add("volume", "", parts[0], False)
        else:
            src, dst = parts[0], parts[1]
            add("bind" if src.startswith(("/", ".")) else "volume", src, dst, ro)
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
        add(kv.get("type", "volume"), kv.get("source") or kv.get("src") or "", dst, ro)
    for t in o.tmpfs:
        add("tmpfs", "", t.partition(":")[0], False)
    return out


def _oci_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in mounts:
        if m["Type"] == "tmpfs":
            out.append({"destination": m["Destination"], "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=1777"]
                        + ([] if m["RW"] else ["ro"])})
        else:
            out.append({"destination": m["Destination"], "type": "bind",
                        "source": m["Source"],
                        "options": ["rbind", "rw" if m["RW"] else "ro"]})
    return out


def _apply_caps(proc: dict[str, Any], add: list[str], drop: list[str]) -> None:
    from cove.runtime.spec import DEFAULT_CAPS
    from cove.sys.caps import CAPS
    caps = proc.setdefault("capabilities", {})
    base = set(caps.get("bounding", DEFAULT_CAPS))
    every = set(CAPS)
    adds = {_cap(c) for c in add}
    drops = {_cap(c) for c in drop}
    if "ALL" in adds:
        base |= every
    base |= adds - {"ALL"}
    base = set() if "ALL" in drops else base - drops
    for k in ("bounding", "effective", "permitted"):
        caps[k] = sorted(base)
    for k in ("inheritable", "ambient"):
        if k in caps:
            caps[k] = sorted(set(caps[k]) & base)


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
    if o.cap_add or o.cap_drop:
        _apply_caps(spec["process"], o.cap_add, o.cap_drop)
        if "seccomp" in lin:
            from cove.runtime.seccomp_default import default_profile
            lin["seccomp"] = default_profile(spec["process"]["capabilities"]["bounding"])
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
    mode = hc["NetworkMode"]
    if mode == "host":
        lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "network"]
    elif mode != "none":
        from cove.engine import network
        nsfile = network.netns_path(paths, rec["Name"])
        for n in lin["namespaces"]:
            if n["type"] == "network":
                n["path"] = nsfile
        for etc in ("hosts", "resolv.conf"):
            spec["mounts"].append({"destination": f"/etc/{etc}", "type": "bind",
                                   "source": os.path.join(paths.cdir(rec["Name"]), etc),
                                   "options": ["rbind", "rw"]})
    return spec


# -- records ----------------------------------------------------------------------------

def _new_record(cid: str, name: str, o: RunOptions, digest: str,
                argv: list[str]) -> dict[str, Any]:
    lc: dict[str, str] = {}
    for opt in o.log_opts:
        k, _, v = opt.partition("=")
        if k not in ("max-size", "max-file"):
            raise CoveError(f"--log-opt {opt}", "json-file takes max-size and max-file")
        lc[k] = v
    if "max-size" in lc:
        L.parse_size(lc["max-size"])
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
    mem = parse_size(o.memory) if o.memory else 0
    net = "bridge" if o.network in ("default", "bridge") else o.network
    return {
        "Id": cid, "Name": name, "Created": S.now_rfc3339(), "Image": o.image,
        "ImageDigest": digest, "Path": argv[0] if argv else "", "Args": argv[1:],
        "Config": {"Hostname": o.hostname or cid[:12], "Cmd": o.command, "Tty": o.tty,
                   "Env": o.env, "Healthcheck": health, "StopSignal": o.stop_signal},
        "HostConfig": {
            "AutoRemove": o.rm and o.detach,
            "RestartPolicy": parse_restart(o.restart),
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
    from cove.engine.monitor import read_exit
    cdir = paths.cdir(name)
    rec = S.load(cdir)
    if rec is None:
        raise CoveError(f"container {name}", "no such container")
    st = rec["State"]
    if st["Status"] == "running" and not S.pid_alive(int(st.get("Pid") or 0),
                                                     st.get("PidStart")) \
            and not _monitor_alive(rec):
        code = read_exit(cdir, int(st.get("Pid") or 0))
        if code is None and _zygote_alive(rec):
            # it reaps the orphaned init and writes the code: a moment
            import time
            deadline = time.monotonic() + 2.0
            while code is None and time.monotonic() < deadline:
                time.sleep(0.05)
                code = read_exit(cdir, int(st.get("Pid") or 0))

        def lost(r: dict[str, Any]) -> None:
            r["State"].update(Status="exited", Running=False, Pid=0,
                              ExitCode=255 if code is None else code,
                              FinishedAt=S.now_rfc3339(),
                              Error="exited while no monitor watched it; exit code lost"
                              if code is None else "")
            r["MonitorPid"] = 0
        rec = S.update(cdir, lost)
        _rt_delete(paths, name)
        cleanup(paths, name)
        if rec["HostConfig"].get("AutoRemove"):
            with contextlib.suppress(CoveError):
                remove(paths.root, name, force=True)
            rec["State"]["Status"] = "removed"
    rec["LogPath"] = L.log_path(cdir)
    return rec


def cleanup(paths: S.Paths, name: str) -> None:
    """After a run: the network torn down, the rootfs unmounted (kept for a restart)."""
    from cove.engine import monitor
    monitor.cleanup(paths, name, S.load(paths.cdir(name)) or {})


def _zygote_alive(rec: dict[str, Any]) -> bool:
    pid = int(rec.get("ZygotePid") or 0)
    return pid > 0 and S.pid_alive(pid, rec.get("ZygoteStart"))


def _monitor_alive(rec: dict[str, Any]) -> bool:
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
    digest = images.find_image(st, o.image)
    img = st.image(digest)
    cid = os.urandom(32).hex()
    name = o.name or f"cove-{cid[:12]}"
    # everything that can be checked is, before anything is made
    check_name(name)
    if os.path.lexists(paths.cdir(name)):
        raise CoveError(f"container name {name!r}", "already in use")
    rec = _new_record(cid, name, o, digest, [])
    icfg = img.config.config
    exposed = [p if "/" in p else f"{p}/tcp" for p in icfg.exposed_ports]
    rec["Config"]["ExposedPorts"] = {p: {} for p in
                                     dict.fromkeys([*exposed, *rec["HostConfig"]["PortBindings"]])}
    rec["Config"]["Volumes"] = {v: {} for v in icfg.volumes} or None
    if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        network.check_exists(paths, rec["HostConfig"]["NetworkMode"])
        network.check_ports(paths, rec["HostConfig"]["PortBindings"])
    rootfs = snapshots.prepare(st, img, name)
    made: list[str] = []
    try:
        rec["Mounts"] = _mounts(paths, o, made)
        rec["AnonymousVolumes"] = _image_volumes(paths, rec["Mounts"],
                                                 img.config.config.volumes, rootfs.path, made)
        rec["CreatedVolumes"] = made
        spec = build_spec(paths, rec, o, rootfs.path, img.config.config)
        argv = spec["process"]["args"]
        rec["Path"], rec["Args"] = argv[0], argv[1:]
        with open(os.path.join(rootfs.container_dir, "config.json"), "w") as f:
            json.dump(spec, f, indent=1)
        S.save(rootfs.container_dir, rec)
    except BaseException:
        snapshots.release(st, name, remove=True)
        _drop_volumes(root, made)
        raise
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
    owners, modes and symlinks kept; nothing when it is absent or leads out of the rootfs."""
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

    def prep(r: dict[str, Any]) -> None:
        r["ManuallyStopped"] = False
        if policy_restart:
            r["RestartCount"] = int(r.get("RestartCount", 0)) + 1
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
    except CoveError:
        if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
            teardown(paths, name)
        raise
    rec = refresh(paths, name)
    if rec["Config"].get("Healthcheck") or rec["HostConfig"]["RestartPolicy"]["Name"] != "no":
        from cove.engine import supervisor
        supervisor.ensure(root)
    return rec


MONITOR_MAIN = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from cove.engine.monitor import main; sys.exit(main(sys.argv[1:]))")


ZYGOTE_MAIN = MONITOR_MAIN.replace("monitor", "zygote")


def zygote_spawn(root: str, name: str, role: str, sync: int, logf: int,
                 env: dict[str, str]) -> bool:
    """Have the root's zygote (cove/engine/zygote.py) fork a monitor (`role` "" or
    "adopt"), starting the zygote when none answers; False when that fails (the caller
    execs one instead)."""
    import socket

    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "zygote.sock")
    msg = "\0".join([name, role,
                     *(f"{k}={v}" for k, v in env.items())]).encode("utf-8", "surrogateescape")
    for attempt in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(10)
            s.connect(path)
            socket.send_fds(s, [msg], [sync, logf])
            return int(s.recv(64) or b"-1") > 0
        except (OSError, ValueError):
            if attempt or os.environ.get("COVE_NO_ZYGOTE"):
                return False
            if not _start_zygote(root, env, src):
                return False
        finally:
            s.close()
    return False


def _start_zygote(root: str, env: dict[str, str], src: str) -> bool:
    r, w = os.pipe()
    logf = os.open(os.path.join(root, "zygote.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", ZYGOTE_MAIN, src, root, str(w)],
                         pass_fds=[w], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                         start_new_session=True, env=env, cwd="/")
    except OSError:
        return False
    finally:
        os.close(w)
        os.close(logf)
    with os.fdopen(r, "rb") as f:
        return f.readline().strip() == b"ok"


def spawn_monitor(root: str, name: str, adopt: bool = False) -> None:
    """Start a container's monitor (or, with `adopt`, a new one for a running container
    whose monitor died) and wait for its word. `python -I -S`: no site, no
    PYTHONPATH; the monitor puts the source tree on sys.path itself."""
    paths = S.Paths(root)
    cdir = paths.cdir(name)
    rt = runtime_binary()
    env = {**os.environ, "COVE_RUNTIME": os.path.abspath(rt) if os.sep in rt else rt}
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r, w = os.pipe()
    logf = os.open(os.path.join(cdir, "monitor.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    p = None
    try:
        if not zygote_spawn(root, name, "adopt" if adopt else "", w, logf, env):
            p = subprocess.Popen([sys.executable, "-I", "-S", "-c", MONITOR_MAIN, src, root,
                                  name, str(w), *(["--adopt"] if adopt else [])],
                                 pass_fds=[w], stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=logf, start_new_session=True, env=env, cwd="/")
    finally:
        os.close(w)
        os.close(logf)
    with os.fdopen(r, "rb") as f:
        line = f.readline().decode().strip()
    if p is not None and p.poll() is not None:
        p.wait()
    if line != "ok" and not adopt:
        raise CoveError(f"container {name}", line.removeprefix("error: ") or
                        "its monitor died while starting it")


def adopt(root: str, name: str) -> None:
    """Start a monitor for a running container whose monitor died: the log flows again."""
    spawn_monitor(root, name, adopt=True)


def run(root: str, o: RunOptions, out: Any = None, err: Any = None) -> tuple[dict[str, Any], int]:
    """create + start; attached (not `detach`), copy its output to `out`/`err` until it
    exits and return its exit code (and remove it with `rm`)."""
    if o.tty and not o.detach:
        return run_tty(root, o)
    if o.tty:
        raise CoveError("run -t -d", "a detached container gets no terminal here; drop -t")
    rec = create(root, o)
    name = rec["Name"]
    try:
        rec = start(root, name)
    except BaseException:
        with contextlib.suppress(Exception):
            remove(root, name, force=True)
        _drop_volumes(root, rec.get("CreatedVolumes") or [])
        raise
    if o.detach:
        return rec, 0
    try:
        for e in logs(root, name, follow=True):
            stream = (err or sys.stderr) if e["stream"] == "stderr" else (out or sys.stdout)
            stream.write(e["log"])
            stream.flush()
        code = wait(root, name)
    except KeyboardInterrupt:
        stop(root, name, timeout=10)
        code = 130
    if o.rm:
        remove(root, name, force=True)
    return rec, code


def run_tty(root: str, o: RunOptions) -> tuple[dict[str, Any], int]:
    """`run -it`: the runtime's own foreground run relays the terminal; the record shows
    the container while it runs."""
    from cove.image import snapshots
    from cove.image.store import Store
    paths = S.Paths(root)
    rec = create(root, o)
    name = rec["Name"]
    cdir = paths.cdir(name)
    if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        network.attach(paths, name)

    def running(r: dict[str, Any]) -> None:
        r["State"].update(Status="running", Running=True, StartedAt=S.now_rfc3339())
    S.update(cdir, running)
    try:
        code = subprocess.call([*runtime(paths), "run", "--bundle", cdir, name],
                               stdin=None if o.interactive or o.tty else subprocess.DEVNULL)
    except KeyboardInterrupt:
        code = 130
    finally:
        _rt_delete(paths, name)
        teardown(paths, name)
        snapshots.release(Store(root), name, remove=False)

    def done(r: dict[str, Any]) -> None:
        r["State"].update(Status="exited", Running=False, ExitCode=code,
                          FinishedAt=S.now_rfc3339())
    rec = S.update(cdir, done)
    if o.rm:
        remove(root, name, force=True)
    return rec, code


def _wait_status(paths: S.Paths, name: str, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        rec = refresh(paths, name)
        if rec["State"]["Status"] not in ACTIVE:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill(root: str, name: str, sig: str | int = "KILL", *, manual: bool = True) -> None:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    rec = refresh(paths, name)
    if rec["State"]["Status"] != "running":
        raise CoveError(f"container {name}", "is not running")
    if manual:
        S.update(paths.cdir(name), lambda r: r.update(ManuallyStopped=True))
    r = subprocess.run([*runtime(paths), "kill", name, _signal_name(sig)],
                       capture_output=True, text=True)
    if r.returncode != 0 and S.pid_alive(int(rec["State"]["Pid"]), rec["State"]["PidStart"]):
        raise CoveError(f"kill {name}", r.stderr.strip())


def stop(root: str, name: str, timeout: float = 10.0) -> None:
    """The stop signal, then SIGKILL after `timeout` seconds; waits for the exit."""
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    S.update(paths.cdir(name), lambda r: r.update(ManuallyStopped=True))
    rec = refresh(paths, name)
    if rec["State"]["Status"] == "restarting":
        S.update(paths.cdir(name), lambda r: r["State"].update(Status="exited"))
    if rec["State"]["Status"] != "running":
        return
    with contextlib.suppress(CoveError):
        kill(root, name, rec["Config"].get("StopSignal") or "TERM")
    if not _wait_status(paths, name, timeout):
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        _wait_status(paths, name, 10)


def restart(root: str, name: str, timeout: float = 10.0) -> dict[str, Any]:
    stop(root, name, timeout)
    return start(root, name)


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
    rec = refresh(paths, name)
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
    return name


def teardown(paths: S.Paths, name: str) -> None:
    """Undo what start set up outside the runtime (the container's network)."""
    rec = S.load(paths.cdir(name)) or {}
    if rec.get("HostConfig", {}).get("NetworkMode") in ("host", "none"):
        return
    from cove.engine import network
    network.detach(paths, name)


# -- queries ----------------------------------------------------------------------------

def inspect(root: str, name: str) -> dict[str, Any]:
    paths = S.Paths(root)
    return refresh(paths, S.lookup(paths, name))


def ps(root: str, all: bool = False) -> list[dict[str, Any]]:
    paths = S.Paths(root)
    out = []
    for n in S.all_names(paths):
        with contextlib.suppress(CoveError):
            rec = refresh(paths, n)
            if all or rec["State"]["Status"] in ACTIVE:
                out.append(rec)
    return out


def status_line(rec: dict[str, Any]) -> str:
    st = rec["State"]
    if st["Status"] == "running":
        h = (st.get("Health") or {}).get("Status")
        up = time.time() - S.parse_rfc3339(st["StartedAt"])
        return f"Up {int(up)}s" + (f" ({h})" if h else "")
    if st["Status"] == "exited":
        return f"Exited ({st['ExitCode']})"
    return st["Status"].capitalize()


def logs(root: str, name: str, *, follow: bool = False, since: str | None = None,
         tail: int = -1) -> Iterator[dict[str, Any]]:
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    path = L.log_path(paths.cdir(name))

    def alive() -> bool:
        rec = S.load(paths.cdir(name))
        return bool(rec) and rec is not None and (
            rec["State"]["Status"] in ACTIVE or _monitor_alive(rec))
    return L.follow(path, alive if follow else None,
                    since=L.parse_since(since) if since else 0.0, tail=tail)


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
        return subprocess.call([*args, name, *cmd],
                               stdin=None if interactive else subprocess.DEVNULL)
    return _exec_tty(args, name, cmd, paths.cdir(name))


def _exec_tty(args: list[str], name: str, cmd: list[str], cdir: str) -> int:
    import socket

    from cove.runtime.run import _relay
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
    """One sample from the runtime's cgroup layer (runc's stats JSON), summarized."""
    paths = S.Paths(root)
    name = S.lookup(paths, name)
    r = subprocess.run([*runtime(paths), "events", "--stats", name], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise CoveError(f"stats {name}", r.stderr.strip() or "failed")
    data = json.loads(r.stdout.splitlines()[0])["data"]
    mem = data.get("memory", {}).get("usage", {})
    return {"Name": name, "Id": refresh(paths, name)["Id"],
            "CPUNanos": data.get("cpu", {}).get("usage", {}).get("total", 0),
            "MemUsage": mem.get("usage", 0), "MemLimit": mem.get("limit", 0),
            "Pids": data.get("pids", {}).get("current", 0), "Raw": data}


def port(root: str, name: str) -> dict[str, list[dict[str, str]]]:
    rec = inspect(root, name)
    ports: dict[str, list[dict[str, str]]] = rec["NetworkSettings"].get("Ports") or {}
    return ports or rec["HostConfig"]["PortBindings"]


def stop_all(root: str) -> None:
    """Stop every running container (tests, `cove system reset`)."""
    for rec in ps(root):
        with contextlib.suppress(CoveError):
            stop(root, rec["Name"], 2)

