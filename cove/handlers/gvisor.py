"""The `gvisor` handler: the bundle run by gVisor's `runsc` (Debian's), Cove keeping the
lifecycle record, the state output and the CLI contract.

runsc keeps its own state under `<root>/runsc` (Cove's --root), so two Cove roots never
see each other's sandboxes; Cove's `<root>/<id>/state.json` records the handler, which
later verbs dispatch on. runsc runs with the ptrace platform (no KVM needed) and, unless
the annotation io.cove.gvisor.network says `sandbox` or `host`, without a network; a
CRI pod with a network namespace gets `sandbox` (the pod's CNI interface).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as runtime_state

if TYPE_CHECKING:
    from cove.runtime import CreateOptions, ExecOptions

NET_ANNOTATION = "io.cove.gvisor.network"


def _runsc() -> str:
    path = os.environ.get("COVE_RUNSC") or shutil.which("runsc") or ""
    if not path or not os.access(path, os.X_OK):
        raise CoveError("gvisor handler", "runsc not installed (apt-get install runsc)")
    return path


# runsc (2022) refuses --network=sandbox when /proc/sys/net/core/rmem_default exists,
# its mark of the node's own network namespace ("cannot run with network enabled in
# root network namespace"); kernels since 6.x show that file in every namespace, the
# pod's too. So runsc runs, with that network, in a mount namespace of its own (every
# mount a slave: nothing reaches the node) where an empty tmpfs covers /proc/sys/net:
# the check then sees the pod's namespace for what it is. runsc reads nothing else
# there (it takes the pod's interfaces, addresses and routes over netlink).
_HIDE_PROC_NET = ["unshare", "--mount", "--propagation", "slave", "sh", "-c",
                  'mount -t tmpfs -o size=4k,mode=0555 cove-gvisor /proc/sys/net && '
                  'exec "$@"', "runsc"]


def _base(root: str, net: str = "none") -> list[str]:
    cmd = [_runsc(), "--root", os.path.join(root, "runsc"), "--platform=ptrace",
           f"--network={net}"]
    return _HIDE_PROC_NET + cmd if net == "sandbox" else cmd


def _recorded_net(root: str, cid: str) -> str:
    """The --network create used: runsc wants the same flag on every later verb."""
    try:
        with open(os.path.join(root, cid, "state.json"), "rb") as f:
            return str(jsonio.loads(f.read()).get("network") or "none")
    except (OSError, ValueError, AttributeError):
        return "none"


def _call(root: str, args: list[str], what: str, net: str = "",
          capture: bool = True, cid: str = "") -> str:
    net = net or (_recorded_net(root, cid) if cid else "none")
    r = subprocess.run(_base(root, net) + args, stdin=subprocess.DEVNULL if capture else None,
                       capture_output=capture, text=True)
    if r.returncode != 0:
        err = (r.stderr or "").strip().splitlines() if capture else []
        raise CoveError(what, f"runsc: {err[-1] if err else f'exit status {r.returncode}'}")
    return r.stdout or ""


def _network(raw: dict[str, Any]) -> str:
    """runsc's --network: the annotation's; without one, `sandbox` for a CRI pod with a
    network namespace of its own (the sandbox takes over the pod's CNI interface, so
    the pod's IP and port mappings reach it), else `none` (gVisor's loopback only)."""
    ann = raw.get("annotations") or {}
    net = ann.get(NET_ANNOTATION) or ("sandbox" if _pod_netns(raw) else "none")
    if net not in ("none", "sandbox", "host"):
        raise CoveError(f"annotation {NET_ANNOTATION}={net}", "expected none, sandbox or host")
    return str(net)


def _record(root: str, cid: str, bundle: str, raw: dict[str, Any], net: str) -> runtime_state.State:
    sdir = os.path.join(root, cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(sdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {cid!r}", "already exists") from None
    st = runtime_state.State(root, cid, {
        "id": cid, "bundle": bundle, "created": runtime_state.rfc3339(time.time_ns()),
        "owner": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "annotations": raw.get("annotations") or {}, "handler": "gvisor", "network": net,
        "rootfs": os.path.join(bundle, (raw.get("root") or {}).get("path", "rootfs"))})
    st.save()
    return st


def _cant(verb: str, what: str) -> CoveError:
    return CoveError(verb, f"the gvisor handler cannot {what} containers")


def create(o: CreateOptions) -> None:
    if o.preserve_fds:
        raise _cant("create --preserve-fds", "pass extra file descriptors into")
    _create(o.root, o.id, o.bundle, o.pid_file, o.console_socket)


def _create(root: str, cid: str, bundle: str, pid_file: str, console_socket: str,
            run_detached: bool = False) -> None:
    from cove.runtime.caller import load_bundle

    runtime_state.check_id(cid)
    _runsc()
    bundle, raw_b, _spec, _rootfs = load_bundle(bundle)
    raw = jsonio.loads(raw_b)
    net = _network(raw)
    st = _record(root, cid, bundle, raw, net)
    args = ["run", "--detach"] if run_detached else ["create"]
    args += ["--bundle", bundle]
    member = _pod_member(raw) and not run_detached
    if pid_file and not member:
        args += ["--pid-file", os.path.abspath(pid_file)]
    if console_socket:
        args += ["--console-socket", os.path.abspath(console_socket)]
    try:
        # runsc's sandbox inherits our stdio (the container's), as runc's init does.
        # Its errors go to a file: a pipe would stay open in the sandbox.
        import tempfile

        with tempfile.TemporaryFile("w+") as ef:
            r = subprocess.run([*_base(root, net), *args, cid], stderr=ef)
            ef.seek(0)
            err = ef.read().strip().splitlines()
        if r.returncode != 0:
            raise CoveError("gvisor", f"runsc: {err[-1] if err else r.returncode}")
        st.data["pid"] = _runsc_state(root, cid).get("pid", 0)
        st.data["init_start"] = runtime_state.proc_start_time(st.data["pid"])
        if member:
            _fork_monitor(root, cid, st, net, pid_file)
        st.save()
    except BaseException:
        subprocess.run([*_base(root, net), "delete", "--force", cid], capture_output=True)
        runtime_state.remove_dir(st.dir)
        raise


def run(o: CreateOptions, detach: bool) -> int:
    if o.preserve_fds:
        raise _cant("run --preserve-fds", "pass extra file descriptors into")
    root, cid, bundle, pid_file = o.root, o.id, o.bundle, o.pid_file
    if detach:
        _create(root, cid, bundle, pid_file, o.console_socket, run_detached=True)
        return 0
    from cove.runtime.caller import load_bundle

    runtime_state.check_id(cid)
    _runsc()
    bundle, raw_b, _spec, _rootfs = load_bundle(bundle)
    raw = jsonio.loads(raw_b)
    net = _network(raw)
    _record(root, cid, bundle, raw, net)
    args = ["run", "--bundle", bundle]
    if pid_file:
        args += ["--pid-file", os.path.abspath(pid_file)]
    try:
        return subprocess.run([*_base(root, net), *args, cid]).returncode
    finally:
        delete(root, cid, True)


def _runsc_state(root: str, cid: str) -> dict[str, Any]:
    try:
        out = _call(root, ["state", cid], f"container {cid!r}", cid=cid)
    except CoveError:
        return {}
    state: dict[str, Any] = json.loads(out)
    return state


def state(root: str, cid: str) -> dict[str, Any]:
    st = runtime_state.load(root, cid)
    rs = _runsc_state(root, cid)
    status = rs.get("status", "stopped")
    if status == "created" and st.data.get("monitor_pid") and not _monitor_alive(st):
        status = "stopped"  # a pod's container whose start failed: nothing will run
    from cove.oci import OCI_VERSION
    return {"ociVersion": OCI_VERSION, "id": cid,
            "pid": (st.data.get("monitor_pid") or rs.get("pid", 0)) if status != "stopped"
            else 0, "status": status,
            "bundle": st.bundle, "rootfs": st.data.get("rootfs", ""),
            "created": st.data.get("created", ""), "owner": st.data.get("owner", ""),
            **({"annotations": st.data["annotations"]} if st.data.get("annotations") else {})}


def start(root: str, cid: str) -> None:
    st = runtime_state.load(root, cid)
    if st.data.get("monitor_pid"):
        _start_member(st)
        return
    # Starting a container of a pod's sandbox (CRI) spawns its gofer, which would
    # hold a pipe open for its lifetime: errors go through a file, as in create.
    import tempfile

    with tempfile.TemporaryFile("w+") as ef:
        r = subprocess.run([*_base(root, _recorded_net(root, cid)), "start", cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef)
        ef.seek(0)
        err = ef.read().strip().splitlines()
    if r.returncode != 0:
        raise CoveError(f"container {cid!r}",
                        f"runsc: {err[-1] if err else f'exit status {r.returncode}'}")


def kill(root: str, cid: str, sig: int, all_: bool) -> None:
    st = runtime_state.load(root, cid)
    status = state(root, cid)["status"]
    if status == "stopped":
        raise CoveError(f"container {cid!r}", "container not running")
    if status == "created" and st.data.get("monitor_pid"):
        # runsc cannot signal a container it has not started; its monitor stands
        # where runc's init waits for `start`: signalling it ends the container.
        os.kill(st.data["monitor_pid"], sig)
        return
    _call(root, ["kill", *(["--all"] if all_ else []), cid, str(sig)],
          f"container {cid!r}", cid=cid)


def delete(root: str, cid: str, force: bool) -> None:
    st = runtime_state.load(root, cid)
    status = state(root, cid)["status"]
    if status in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {status}")
    if _runsc_state(root, cid):
        _call(root, ["delete", "--force", cid], f"container {cid!r}", cid=cid)
    _end_monitor(st)
    runtime_state.remove_dir(st.dir)
    try:
        os.rmdir(os.path.join(root, "runsc"))  # when it was the last sandbox
    except OSError:
        pass


def pause(root: str, cid: str) -> None:
    runtime_state.load(root, cid)
    _call(root, ["pause", cid], f"container {cid!r}", cid=cid)


def resume(root: str, cid: str) -> None:
    runtime_state.load(root, cid)
    _call(root, ["resume", cid], f"container {cid!r}", cid=cid)


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
    runtime_state.load(root, cid)
    if ps_args:
        raise _cant("ps " + " ".join(ps_args), "pass ps(1) options for")
    if fmt not in ("json", "table"):
        raise CoveError(f"--format {fmt}", "expected table or json")
    return _call(root, ["ps", "--format", fmt, cid], f"container {cid!r}", cid=cid)


def exec_(o: ExecOptions) -> int:
    """runsc exec with runc's flags (runsc spells them as runc does) and our stdio."""
    runtime_state.load(o.root, o.id)
    if o.preserve_fds:
        raise _cant("exec --preserve-fds", "pass extra file descriptors into")
    argv: list[str] = []
    for flag, value in (("process", o.process_file), ("pid-file", o.pid_file),
                        ("console-socket", o.console_socket), ("cwd", o.cwd),
                        ("user", o.user)):
        if value:
            argv += [f"--{flag}", value]
    argv += ["--detach"] * o.detach + ["--tty"] * o.tty
    for e in o.env:
        argv += ["--env", e]
    for c in o.caps:
        argv += ["--cap", c]
    return subprocess.run([*_base(o.root, _recorded_net(o.root, o.id)), "exec", *argv, o.id,
                           *o.args]).returncode


def update(root: str, cid: str, resources: dict[str, Any]) -> None:
    raise _cant("update", "update the resources of")


def events(root: str, cid: str, stats: bool, interval: float) -> None:
    raise _cant("events", "report events or stats of")


def features() -> dict[str, Any]:
    """The namespaces runtime's document, as cove-runtime-gvisor always printed: the
    CLI contract is Cove's; what runsc runs of it is runsc's (`runsc features`)."""
    from cove.runtime.features import features as base_features

    return base_features()


# ---- a container of a pod (CRI) ---------------------------------------------------
# runsc runs every container of a Kubernetes pod in the pod's one sandbox (the
# `io.kubernetes.cri.container-type` annotation). containerd's runc shim, which runs
# cove-runtime-gvisor, expects what runc gives it: the pid in --pid-file is a child it
# reaps when the container ends, and `start` needs no stdio. A pod's container under
# runsc has neither: its pid is the sandbox's (alive while the pod lives), and `runsc
# start` hands the sandbox its own stdio as the container's. So create forks a monitor
# (reparented to the shim, its subreaper): it keeps create's stdio (the container's
# log pipes), waits on start.fifo, runs `runsc start` with that stdio, reports on
# result.fifo, then `runsc wait`s and exits with the container's status.

_MEMBER_TYPES = {"io.kubernetes.cri.container-type": "container",
                 "io.kubernetes.cri-o.ContainerType": "container"}


def _pod_netns(raw: dict[str, Any]) -> bool:
    """A CRI pod's container (sandbox or member) in a network namespace it joins by path
    (the one containerd made for CNI), not the node's."""
    ann = raw.get("annotations") or {}
    if not any(k in ann for k in _MEMBER_TYPES):
        return False
    nss = (raw.get("linux") or {}).get("namespaces") or []
    return any(ns.get("type") == "network" and ns.get("path") for ns in nss)


def _pod_member(raw: dict[str, Any]) -> bool:
    ann = raw.get("annotations") or {}
    return any(ann.get(k) == v for k, v in _MEMBER_TYPES.items())


def _fork_monitor(root: str, cid: str, st: runtime_state.State, net: str, pid_file: str) -> None:
    for name in ("start.fifo", "result.fifo"):
        os.mkfifo(os.path.join(st.dir, name), 0o600)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the monitor
        code = 255
        try:
            os.closerange(3, 65536)
            code = _monitor(root, cid, st.dir, net)
        finally:
            os._exit(code)
    st.data["monitor_pid"] = pid
    st.data["monitor_start"] = runtime_state.proc_start_time(pid)
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(str(pid))


def _monitor(root: str, cid: str, sdir: str, net: str) -> int:
    with open(os.path.join(sdir, "start.fifo"), "rb") as f:
        if f.read() != b"start":
            return 255  # deleted before it started
    log = os.path.join(sdir, "runsc-start.log")
    r = subprocess.run([*_base(root, net), f"--debug-log={log}", "start", cid])
    why = "ok"
    if r.returncode != 0:
        why = f"runsc start: exit status {r.returncode}"
        try:
            with open(log) as f:
                fatal = [ln for ln in f if "FATAL ERROR" in ln]
            if fatal:
                why = "runsc: " + fatal[-1].split("FATAL ERROR:", 1)[-1].strip()
        except OSError:
            pass
    with open(os.path.join(sdir, "result.fifo"), "w") as f:
        f.write(why)
    if r.returncode != 0:
        return 255
    w = subprocess.run([*_base(root, net), "wait", cid], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        return int(json.loads(w.stdout)["exitStatus"]) & 0xFF
    except (ValueError, KeyError, TypeError):
        return 255


def _start_member(st: runtime_state.State) -> None:
    if not _monitor_alive(st):
        raise CoveError(f"container {st.data['id']!r}", "its monitor is gone")
    with open(os.path.join(st.dir, "start.fifo"), "wb") as f:
        f.write(b"start")
    # Non-blocking: a monitor that dies before it answers must not hang the shim.
    fd = os.open(os.path.join(st.dir, "result.fifo"), os.O_RDONLY | os.O_NONBLOCK)
    buf = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                chunk = None  # the monitor has it open, nothing written yet
            if chunk:
                buf += chunk
                continue
            if (chunk == b"" and buf) or not _monitor_alive(st):
                break
            time.sleep(0.005)
    finally:
        os.close(fd)
    why = buf.decode(errors="replace")
    if why != "ok":
        raise CoveError(f"container {st.data['id']!r}", why or "the monitor died")


def _monitor_alive(st: runtime_state.State) -> bool:
    pid = st.data.get("monitor_pid", 0)
    return bool(pid) and runtime_state.proc_start_time(pid) == st.data.get("monitor_start")


def _end_monitor(st: runtime_state.State) -> None:
    """A monitor still waiting to start its container ends with it."""
    if _monitor_alive(st):
        try:
            os.kill(st.data["monitor_pid"], 9)
        except OSError:
            pass
