"""The `vm` handler: each container in its own qemu micro-VM (see docs/isolation.md).

The host side of the lifecycle; the state is cove.runtime's, so `start` (the exec
fifo, which the monitor blocks on), `state`, `list` and `kill` (a signal to the
monitor, which forwards it to the guest) are the container handler's own code. This
module adds what differs: create (boot, wait for the guest, the host's hooks), run,
delete (qemu too) and kill; exec, ps, update, pause and resume are in cove.handlers.vm.ctl.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from cove.errors import CoveError
from cove.handlers.vm import ctl
from cove.handlers.vm.ctl import pause, resume, status, update
from cove.handlers.vm.guestcfg import cache_dir, guest_config, sizes
from cove.oci import jsonio
from cove.runtime import state as runtime_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import Spec
    from cove.runtime import CreateOptions, ExecOptions

# The verbs of cove.runtime.handler.Handler; this module is the vm handler.
__all__ = ["create", "delete", "events", "exec_", "features", "kill", "pause", "ps", "resume",
           "run", "start", "state", "update"]


def _boot_timeout(cfg: dict[str, Any], accel: str) -> float:
    ann = (cfg.get("annotations") or {}).get("io.cove.vm.boot-timeout")
    v = os.environ.get("COVE_VM_BOOT_TIMEOUT") or ann or (20 if accel == "kvm" else 90)
    try:
        return float(v)
    except ValueError:
        raise CoveError(f"annotation io.cove.vm.boot-timeout={v}", "expected seconds") from None


def _cant(verb: str, what: str) -> CoveError:
    return CoveError(verb, f"the vm handler cannot {what} containers")


def create(o: CreateOptions) -> None:
    if o.preserve_fds:
        raise _cant("create --preserve-fds", "pass extra file descriptors into")
    boot(o.root, o.id, o.bundle, o.pid_file, o.console_socket)


class _Plan:
    """What create decided before booting: the bundle, its guest configuration and
    the qemu command line (kept together so that each step of boot() stays short)."""

    def __init__(self, bundle: str, raw: bytes, spec: Spec, rootfs: str,
                 console_socket: str, console_fd: int) -> None:
        from cove.handlers.vm import qemu, rootimg

        self.bundle, self.raw, self.spec, self.rootfs = bundle, raw, spec, rootfs
        self.terminal = spec.process is not None and spec.process.terminal
        if self.terminal and not console_socket and console_fd < 0:
            raise CoveError("process.terminal", "needs --console-socket")
        why = qemu.missing()
        found = qemu.find_kernel()
        qbin = qemu.qemu_binary()
        if why or found is None or qbin is None:
            raise CoveError("vm handler", why or "no kernel")
        self.kernel, self.moddir = found
        self.qbin: str = qbin
        self.cfg: dict[str, Any] = jsonio.loads(raw)
        self.gcfg, self.shares, self.net = guest_config(self.cfg, rootfs)
        self.rmode = rootimg.mode(self.cfg)
        if self.rmode == "image":
            rootimg.tool()  # say it is missing before booting anything
        self.accel = self.mach = ""
        self.mem = self.cpus = 0
        self.cmd: list[str] = []
        self.timeout = 0.0

    def choose_machine(self) -> None:
        """The accelerator, guest kernel and initrd, machine type and qemu's command
        line (the cached pieces are built on first use: slow once)."""
        from cove.handlers.vm import accel as accels
        from cove.handlers.vm import guest, machine, rootimg

        cache = cache_dir()
        self.accel = accels.choose(cache, self.kernel, self.qbin)
        initrd = guest.initrd(cache, self.moddir)
        if os.environ.get("COVE_VM_KERNEL_IMAGE") != "bzimage":
            self.kernel = guest.vmlinux(cache, self.kernel)
        self.mach = machine.choose(cache, self.kernel, self.qbin, self.accel)
        img = rootimg.image(cache, self.rootfs) if self.rmode == "image" else None
        self.mem, self.cpus = sizes(self.cfg)
        self.cmd = machine.qemu_command(
            self.qbin, self.kernel, initrd, self.accel, self.mach, self.mem, self.cpus,
            self.rootfs, img, self.gcfg["root"]["readonly"], self.shares, self.net,
            self.cfg.get("hostname", ""))
        self.timeout = _boot_timeout(self.cfg, self.accel)


def _spawn_monitor(sdir: str, cid: str, plan: _Plan, close: tuple[int, ...],
                   slave: int) -> tuple[int, str]:
    """Fork the monitor (it runs qemu and waits for the guest's answer); its pid and
    its one message: `ok <qemu pid>` or `error <why>`."""
    from cove.handlers.vm import vmm

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        for fd in close:
            if fd >= 0:
                os.close(fd)
        vmm.run(sdir, plan.cmd, {"id": cid, "config": plan.gcfg}, plan.timeout, w, slave)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    return pid, msg.decode(errors="replace")


def _new_state(root: str, cid: str, pid: int, qemu_pid: int,
               plan: _Plan) -> runtime_state.State:
    st = runtime_state.State(root, cid, {
        "id": cid, "pid": pid, "init_start": runtime_state.proc_start_time(pid),
        "bundle": plan.bundle,
        "rootfs": plan.rootfs, "created": runtime_state.rfc3339(time.time_ns()),
        "owner": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "annotations": plan.cfg.get("annotations") or {}, "handler": "vm",
        "qemu_pid": qemu_pid, "accel": plan.accel, "machine": plan.mach,
        "rootfs_mode": plan.rmode, "memory_mib": plan.mem, "creating": True})
    st.data["qemu_start"] = runtime_state.proc_start_time(qemu_pid)
    st.save()
    return st


def _make_state_dir(root: str, cid: str) -> str:
    sdir = os.path.join(root, cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(sdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {cid!r}", "already exists") from None
    return sdir


def boot(root: str, cid: str, bundle: str, pid_file: str = "", console_socket: str = "",
         console_fd: int = -1) -> runtime_state.State:
    """Boot the VM and create the container in it; the monitor (our child) holds qemu.

    With process.terminal the host pty's master goes to `console_socket` (or the
    connected socket `console_fd`, `run`'s own) once the guest has created the process."""
    from cove.handlers.vm import console
    from cove.runtime.caller import load_bundle, write_pid_file
    from cove.runtime.hooks import run_hooks

    runtime_state.check_id(cid)
    plan = _Plan(*load_bundle(bundle), console_socket, console_fd)
    sdir = _make_state_dir(root, cid)
    pid = 0
    csock = master = slave = -1
    try:
        with open(os.path.join(sdir, "config.json"), "wb") as f:
            f.write(plan.raw)
        os.mkfifo(os.path.join(sdir, "exec.fifo"), 0o600)
        if plan.terminal:
            csock = console.connect(console_socket) if console_socket else os.dup(console_fd)
            master, slave = console.open_pty(console.console_size(plan.cfg.get("process")))
        plan.choose_machine()
        pid, text = _spawn_monitor(sdir, cid, plan, (csock, master), slave)
        if not text.startswith("ok "):
            raise CoveError("vm", text.removeprefix("error ") or "the monitor died while booting")
        st = _new_state(root, cid, pid, int(text.split()[1]), plan)
        # The host's create-time hooks, as runc runs them: after the container exists
        # (in the guest), before create returns; their state's pid is the monitor's.
        hs = st.hook_state("created")  # the spec's state for these hooks (as crun)
        run_hooks("prestart", plan.spec.hooks.prestart, hs)
        run_hooks("createRuntime", plan.spec.hooks.createRuntime, hs)
        if plan.terminal:
            console.send_master(csock, master, slave)
            csock = -1
        del st.data["creating"]
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
        runtime_state.remove_dir(sdir)
        raise
    finally:
        for fd in (csock, master, slave):
            if fd >= 0:
                os.close(fd)


def run(o: CreateOptions, detach: bool) -> int:
    """create + start (+ wait, delete). With a terminal and no --console-socket, relay
    between our own terminal and the container's, as runc does."""
    if o.preserve_fds:
        raise _cant("run --preserve-fds", "pass extra file descriptors into")
    root, cid, bundle, pid_file, console_socket = (o.root, o.id, o.bundle, o.pid_file,
                                                   o.console_socket)
    from cove.runtime.caller import recv_master, relay, wait_forwarding, wants_terminal
    from cove.runtime.start import start

    ours = theirs = master = -1
    if not console_socket and wants_terminal(bundle):
        if detach:
            raise CoveError("run --detach", "a terminal needs --console-socket")
        import socket

        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours, theirs = a.detach(), b.detach()
    try:
        st = boot(root, cid, bundle, pid_file, console_socket, theirs)
    except BaseException:
        if ours >= 0:
            os.close(ours)
        raise
    finally:
        if theirs >= 0:
            os.close(theirs)
    try:
        if ours >= 0:
            master = recv_master(ours)  # closes ours
        start(root, cid)
    except BaseException:
        delete(root, cid, True)
        raise
    if detach:
        return 0
    try:
        if master >= 0:
            relay(master, st.pid)
            return wait_forwarding(st.pid, forward=False)
        return wait_forwarding(st.pid)
    finally:
        if master >= 0:
            os.close(master)
        delete(root, cid, True)


def _qemu_alive(st: runtime_state.State) -> int:
    q = int(st.data.get("qemu_pid", 0))
    return q if q > 0 and runtime_state.proc_start_time(q) == st.data.get("qemu_start") else 0


def start(root: str, cid: str) -> None:
    """The namespaces runtime's own: the monitor blocks on the exec fifo as an init does."""
    from cove.runtime.start import start as base_start

    base_start(root, cid)


def delete(root: str, cid: str, force: bool) -> None:
    from cove.runtime.delete import delete as base_delete

    try:
        st = runtime_state.load(root, cid)
    except CoveError:
        return base_delete(root, cid, force)
    s = status(st)
    if s in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {s}")
    stop(st)
    base_delete(root, cid, True)


def stop(st: runtime_state.State) -> None:
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


def kill(root: str, cid: str, sig: int, all_: bool) -> None:
    """The monitor (the state's pid) forwards catchable signals to the guest; SIGKILL
    kills the VM, every process in it (so `all_` changes nothing)."""
    from cove.runtime.kill import kill as base_kill

    if sig != signal.SIGKILL:
        base_kill(root, cid, sig)  # the monitor forwards it to the guest's process
        return
    st = runtime_state.load(root, cid)
    if not st.alive():
        raise CoveError(f"container {cid!r}", "container not running")
    stop(st)


def state(root: str, cid: str) -> dict[str, Any]:
    st = runtime_state.load(root, cid)
    out = st.oci()
    out["status"] = status(st)
    return out


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
    if ps_args:
        raise _cant("ps " + " ".join(ps_args), "pass ps(1) options for")
    return ctl.ps(root, cid, fmt)


def exec_(o: ExecOptions) -> int:
    if o.preserve_fds:
        raise _cant("exec --preserve-fds", "pass extra file descriptors into")
    proc = ctl.process_from(o.root, o.id, o.process_file, o.args, o.env, o.cwd, o.user, o.tty)
    return ctl.exec_process(o.root, o.id, proc, o.detach, o.pid_file, o.console_socket)


def events(root: str, cid: str, stats: bool, interval: float) -> None:
    raise _cant("events", "report events or stats of")


def features() -> dict[str, Any]:
    """The namespaces runtime's: the guest runs it, on the spec it is given."""
    from cove.runtime.features import features as base_features

    return base_features()
