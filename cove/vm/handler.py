"""The `vm` handler: each container in its own qemu micro-VM (see docs/isolation.md).

The host side of the lifecycle; the state is cove.runtime's, so `start` (the exec
fifo, which the monitor blocks on), `state`, `list` and `kill` (a signal to the
monitor, which forwards it to the guest) are the container handler's own code. This
module adds what differs: create (boot, wait for the guest), delete (qemu too), exec
and ps (through the monitor's ctl.sock), pause/resume (qemu's QMP).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

from cove.errors import CoveError, os_why
from cove.oci import jsonio
from cove.runtime import state as S
from cove.vm import proto as P

ANNOTATION = "io.cove.isolation"
NET_ANNOTATION = "io.cove.vm.network"
GUEST_RUN = "/run/cove"


def cache_dir() -> str:
    env = os.environ.get("COVE_VM_CACHE")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/cove/vm"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "cove", "vm")


def _src_dir() -> str:
    """The directory holding the `cove` package (shared read-only with the guest)."""
    import cove

    return os.path.dirname(os.path.abspath(cove.__file__))


class Share:
    def __init__(self, tag: str, path: str, ro: bool) -> None:
        self.tag = tag
        self.path = path
        self.ro = ro


def guest_config(raw: dict[str, Any], rootfs: str) -> tuple[dict[str, Any], list[Share], str]:
    """The config the guest's cove-runtime runs, the bind-mount shares, the network mode."""
    cfg = json.loads(json.dumps(raw))
    cfg["root"] = {"path": f"{GUEST_RUN}/rootfs",
                   "readonly": bool((raw.get("root") or {}).get("readonly"))}
    shares: list[Share] = []
    by_dir: dict[str, Share] = {}
    for m in cfg.get("mounts") or []:
        opts = m.get("options") or []
        if m.get("type") != "bind" and "bind" not in opts and "rbind" not in opts:
            continue
        src = m.get("source", "")
        if not src.startswith("/") or src.startswith("/dev/"):
            continue
        if os.path.isdir(src):
            d, name = src, ""
        elif os.path.exists(src):
            d, name = os.path.dirname(src), os.path.basename(src)
        else:
            raise CoveError(f"mounts: {m.get('destination')}", f"source {src} does not exist")
        ro = "ro" in opts
        sh = by_dir.get(d)
        if sh is None:
            sh = by_dir[d] = Share(f"m{len(shares)}", d, ro)
            shares.append(sh)
        sh.ro = sh.ro and ro
        m["source"] = f"{GUEST_RUN}/{sh.tag}" + (f"/{name}" if name else "")
    lin = cfg.setdefault("linux", {})
    nss = lin.get("namespaces") or []
    netns = [n for n in nss if n.get("type") == "network"]
    net = (raw.get("annotations") or {}).get(NET_ANNOTATION, "")
    if not net:
        net = "none" if netns and not netns[0].get("path") else "user"
    if net not in ("none", "user"):
        raise CoveError(f"annotation {NET_ANNOTATION}={net}", "expected none or user")
    # Namespaces to join are the host's: meaningless in the guest, which is its own world.
    lin["namespaces"] = [n for n in nss if not n.get("path")
                         and not (net == "user" and n.get("type") == "network")]
    lin.pop("cgroupsPath", None)
    cfg.pop("hooks", None)  # host hooks: run (poststart, poststop) by the host verbs
    # Inside the guest the process runs in a plain container: an isolation annotation
    # left in would make the guest's cove-runtime try to start a VM of its own.
    ann = cfg.get("annotations")
    if isinstance(ann, dict) and ANNOTATION in ann:
        cfg["annotations"] = {k: v for k, v in ann.items() if k != ANNOTATION}
    return cfg, shares, net


def _sizes(raw: dict[str, Any]) -> tuple[int, int]:
    """(MiB of guest memory, vCPUs) from linux.resources."""
    res = (raw.get("linux") or {}).get("resources") or {}
    mem = 512
    limit = (res.get("memory") or {}).get("limit")
    if isinstance(limit, int) and limit > 0:
        mem = max(256, limit // (1 << 20) + 160)  # the guest kernel and agent's share
    cpu = res.get("cpu") or {}
    cpus = 1
    quota, period = cpu.get("quota"), cpu.get("period") or 100000
    if isinstance(quota, int) and quota > 0:
        cpus = -(-quota // period)
    elif cpu.get("cpus"):
        cpus = 0
        for part in str(cpu["cpus"]).split(","):
            a, _, b = part.partition("-")
            cpus += int(b or a) - int(a) + 1
    return mem, max(1, min(cpus, os.cpu_count() or 1))


def qemu_command(qemu_bin: str, kernel: str, initrd: str, accel: str, mem: int, cpus: int,
                 rootfs: str, ro_root: bool, shares: list[Share], net: str,
                 hostname: str) -> list[str]:
    from cove.vm import accel as A
    from cove.vm.qemu import tsc_khz

    machine = os.environ.get("COVE_VM_MACHINE", "microvm")
    if machine == "microvm":
        m, sfx = "microvm,acpi=on,isa-serial=on,rtc=on", "device"
    else:
        m, sfx = "q35", "pci"
    binds = ",".join("ro" if s.ro else "rw" for s in shares)
    append = ("console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init cgroup_no_v1=all "
              f"tsc=reliable{tsc_khz()} cove.ro={int(ro_root)} cove.net={net} "
              f"cove.binds={binds or '-'} cove.hostname={hostname or 'cove'}")
    cmd = [qemu_bin, "-M", m, *A.cpu_args(accel), "-smp", str(cpus), "-m", str(mem),
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-serial", "file:console.log", "-kernel", kernel, "-initrd", initrd,
           "-append", append, "-qmp", "unix:qmp.sock,server=on,wait=off"]
    fs = [Share("usr", "/usr", True), Share("cove", _src_dir(), True),
          Share("rootfs", rootfs, True), *shares]
    for s in fs:
        cmd += ["-fsdev", f"local,id={s.tag},path={s.path},security_model=none,"
                          f"multidevs=remap{',readonly=on' if s.ro else ''}",
                "-device", f"virtio-9p-{sfx},fsdev={s.tag},mount_tag={s.tag}"]
    cmd += ["-device", f"virtio-serial-{sfx},max_ports=2",
            "-chardev", "socket,id=agent,path=serial.sock",
            "-device", "virtserialport,chardev=agent,name=cove.0"]
    if net == "user":
        cmd += ["-netdev", "user,id=n0", "-device", f"virtio-net-{sfx},netdev=n0"]
    return cmd


def create(root: str, cid: str, bundle: str, pid_file: str = "", console_socket: str = "",
           ) -> S.State:
    """Boot the VM and create the container in it; the monitor (our child) holds qemu."""
    from cove.runtime.create import load_bundle, write_pid_file
    from cove.vm import accel as A
    from cove.vm import guest, monitor, qemu

    S.check_id(cid)
    bundle, raw, spec, rootfs = load_bundle(bundle)
    if spec.process is not None and spec.process.terminal:
        raise CoveError("vm handler", "process.terminal is not supported yet (run without -t)")
    why = qemu.missing()
    found = qemu.find_kernel()
    qbin = qemu.qemu_binary()
    if why or found is None or qbin is None:
        raise CoveError("vm handler", why or "no kernel")
    kernel, moddir = found
    cfg_raw = jsonio.loads(raw)
    gcfg, shares, net = guest_config(cfg_raw, rootfs)
    sdir = os.path.join(root, cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(sdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {cid!r}", "already exists") from None
    pid = 0
    try:
        with open(os.path.join(sdir, "config.json"), "wb") as f:
            f.write(raw)
        os.mkfifo(os.path.join(sdir, "exec.fifo"), 0o600)
        cache = cache_dir()
        accel = A.choose(cache, kernel, qbin)
        initrd = guest.initrd(cache, moddir)
        if os.environ.get("COVE_VM_KERNEL_IMAGE") != "bzimage":
            kernel = guest.vmlinux(cache, kernel)
        mem, cpus = _sizes(cfg_raw)
        cmd = qemu_command(qbin, kernel, initrd, accel, mem, cpus, rootfs,
                           gcfg["root"]["readonly"], shares, net, cfg_raw.get("hostname", ""))
        timeout = float(os.environ.get("COVE_VM_BOOT_TIMEOUT")
                        or (cfg_raw.get("annotations") or {}).get("io.cove.vm.boot-timeout")
                        or (20 if accel == "kvm" else 90))
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            monitor.run(sdir, cmd, {"id": cid, "config": gcfg}, timeout, w)
        os.close(w)
        msg = b""
        while chunk := os.read(r, 4096):
            msg += chunk
        os.close(r)
        text = msg.decode(errors="replace")
        if not text.startswith("ok "):
            raise CoveError("vm", text.removeprefix("error ") or "the monitor died while booting")
        st = S.State(root, cid, {
            "id": cid, "pid": pid, "init_start": S.proc_start_time(pid), "bundle": bundle,
            "rootfs": rootfs, "created": S.rfc3339(time.time_ns()),
            "owner": "root" if os.geteuid() == 0 else str(os.geteuid()),
            "annotations": cfg_raw.get("annotations") or {}, "handler": "vm",
            "qemu_pid": int(text.split()[1]), "accel": accel})
        st.data["qemu_start"] = S.proc_start_time(st.data["qemu_pid"])
        st.save()
        if pid_file:
            write_pid_file(pid_file, pid)
        return st
    except BaseException:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        S.remove_dir(sdir)
        raise


def run(root: str, cid: str, bundle: str, pid_file: str, detach: bool) -> int:
    from cove.runtime.run import wait_forwarding
    from cove.runtime.start import start

    st = create(root, cid, bundle, pid_file)
    try:
        start(root, cid)
    except BaseException:
        delete(root, cid, True)
        raise
    if detach:
        return 0
    code = wait_forwarding(st.pid)
    delete(root, cid, True)
    return code


def _qemu_alive(st: S.State) -> int:
    q = int(st.data.get("qemu_pid", 0))
    return q if q > 0 and S.proc_start_time(q) == st.data.get("qemu_start") else 0


def delete(root: str, cid: str, force: bool = False) -> None:
    from cove.runtime import delete as D

    try:
        st = S.load(root, cid)
    except CoveError:
        return D.delete(root, cid, force)
    status = _status(st)
    if status in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {status}")
    stop(st)
    D.delete(root, cid, True)


def stop(st: S.State) -> None:
    """SIGKILL the VM: qemu first, so that the monitor (its parent) reaps it, then the
    monitor (its exit status says SIGKILL, as a killed runc init's does)."""
    q = _qemu_alive(st)
    if q:
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2
    while _qemu_alive(st) and st.alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if st.alive():
        try:
            os.kill(st.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while (st.alive() or _qemu_alive(st)) and time.monotonic() < deadline:
        try:  # ours when `run` made it
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.005)


def kill(root: str, cid: str, sig: int) -> None:
    from cove.runtime.kill import kill as base_kill

    if sig != signal.SIGKILL:
        base_kill(root, cid, sig)  # the monitor forwards it to the guest's process
        return
    st = S.load(root, cid)
    if not st.alive():
        raise CoveError(f"container {cid!r}", "container not running")
    stop(st)


def _status(st: S.State) -> str:
    s = st.status()
    if s == "running" and st.data.get("paused"):
        return "paused"
    return s


def state(root: str, cid: str) -> dict[str, Any]:
    st = S.load(root, cid)
    out = st.oci()
    out["status"] = _status(st)
    return out


def _connect(st: S.State, name: str) -> socket.socket:
    if not st.alive():
        raise CoveError(f"container {st.id!r}", "container not running")
    dfd = os.open(st.dir, os.O_PATH | os.O_CLOEXEC)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(f"/proc/self/fd/{dfd}/{name}")
    except OSError as e:
        s.close()
        raise CoveError(f"container {st.id!r}", f"{name}: {os_why(e)}") from None
    finally:
        os.close(dfd)
    return s


def _qmp(root: str, cid: str, command: str) -> None:
    st = S.load(root, cid)
    s = _connect(st, "qmp.sock")
    f = s.makefile("rwb")
    try:
        f.readline()
        for c in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": c}).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline() or b"{}")
                if "event" not in reply:
                    break
            if "error" in reply:
                raise CoveError(f"{command} {cid}", str(reply["error"].get("desc")))
    finally:
        f.close()
        s.close()
    st.data["paused"] = command == "stop"
    st.save()


def pause(root: str, cid: str) -> None:
    _qmp(root, cid, "stop")


def resume(root: str, cid: str) -> None:
    _qmp(root, cid, "cont")


def ps(root: str, cid: str, fmt: str) -> str:
    st = S.load(root, cid)
    if fmt not in ("json", "table"):
        raise CoveError(f"--format {fmt}", "expected table or json")
    if _status(st) == "stopped":
        pids: list[int] = []
    else:
        s = _connect(st, "ctl.sock")
        s.sendall(P.pack(0, P.PS))
        reader = P.Reader()
        s.settimeout(30)
        pids = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                frames = [f for f in reader.feed(data) if f[1] == P.PS]
                if frames:
                    pids = json.loads(frames[0][2])["pids"]
                    break
        finally:
            s.close()
    if fmt == "json":
        return jsonio.dumps(pids) + "\n"
    return "PID (in the guest)\n" + "".join(f"{p}\n" for p in pids)


def exec_process(root: str, cid: str, proc: dict[str, Any], detach: bool,
                 pid_file: str) -> int:
    """Run `proc` in the guest's container; relay its stdio; its exit code is ours."""
    from cove.runtime.create import write_pid_file

    if proc.get("terminal"):
        raise CoveError("vm handler", "exec with a terminal is not supported yet")
    st = S.load(root, cid)
    if _status(st) != "running":
        raise CoveError(f"container {cid!r}", f"cannot exec in a {_status(st)} container")
    pid_file = os.path.abspath(pid_file) if pid_file else ""
    s = _connect(st, "ctl.sock")
    s.sendall(P.pack(0, P.EXEC, json.dumps(proc).encode()))
    reader = P.Reader()
    pending: list[tuple[int, int, bytes]] = []
    while True:  # until the guest says the process runs (or why it does not)
        data = s.recv(65536)
        if not data:
            raise CoveError(f"exec {cid}", "the VM went away")
        frames = reader.feed(data)
        kinds = [k for _, k, _ in frames]
        if P.ERROR in kinds:
            err = next(p for _, k, p in frames if k == P.ERROR)
            raise CoveError(f"exec {cid}", json.loads(err)["error"])
        pending += [f for f in frames if f[1] != P.READY]  # output may come first
        if P.READY in kinds:
            break
    if detach:
        child = os.fork()
        if child:
            if pid_file:
                write_pid_file(pid_file, child)
            return 0
        os.setsid()
        code = _relay(s, reader, pending)
        os._exit(code)
    if pid_file:
        write_pid_file(pid_file, os.getpid())
    return _relay(s, reader, pending)


def _relay(s: socket.socket, reader: P.Reader, pending: list[tuple[int, int, bytes]]) -> int:
    import select

    stdin_open = True
    frames = pending
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda n, _f: s.sendall(
            P.pack(0, P.SIGNAL, json.dumps({"signal": n}).encode())))
    while True:
        for _, kind, payload in frames:
            if kind == P.STDOUT:
                P.write_all(1, payload)
            elif kind == P.STDERR:
                P.write_all(2, payload)
            elif kind == P.EXIT:
                status = json.loads(payload)["status"]
                return (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                        else 128 + os.WTERMSIG(status))
        frames = []
        fds = [s.fileno(), 0] if stdin_open else [s.fileno()]
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if 0 in ready:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            s.sendall(P.pack(0, P.STDIN, data))
            stdin_open = bool(data)
        if s.fileno() in ready:
            data = s.recv(65536)
            if not data:
                return 255
            frames = reader.feed(data)


def process_from(st_root: str, cid: str, process_file: str, args: list[str], env: list[str],
                 cwd: str, user: str) -> dict[str, Any]:
    """The exec'd process: --process FILE, or the container's with runc's overrides."""
    from cove.oci.spec import Process

    if process_file:
        try:
            with open(process_file, "rb") as f:
                obj = jsonio.loads(f.read())
        except OSError as e:
            raise CoveError(f"--process {process_file}", os_why(e)) from None
        if not isinstance(obj, dict):
            raise CoveError("process", "expected object")
    else:
        if not args:
            raise CoveError("exec", "a process (--process FILE) or arguments are required")
        st = S.load(st_root, cid)
        obj = dict(jsonio.loads(st.config_bytes()).get("process") or {})
        obj["args"] = args
        obj["terminal"] = False
        obj.pop("consoleSize", None)
        if cwd:
            obj["cwd"] = cwd
        if env:
            obj["env"] = list(obj.get("env") or []) + env
        if user:
            uid, _, gid = user.partition(":")
            if not uid.isdigit() or (gid and not gid.isdigit()):
                raise CoveError(f"--user {user}", "expected UID[:GID] as numbers")
            obj["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    Process(obj, "process", need_cwd=False)  # validate here, not after a round trip
    return obj
