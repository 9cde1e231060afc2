"""`create`: build the container and leave its init blocked before execve.

Everything this verb creates (state dir, cgroup, init process, mounts in the
container's namespace) is undone if any step fails: bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import time

from cove.errors import CoveError
from cove.oci.spec import Spec
from cove.runtime import native, process
from cove.runtime import state as runtime_state
from cove.runtime.caller import load_bundle, write_pid_file
from cove.runtime.nsexec import NsPlan, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.oci.spec import Namespace
    from cove.runtime import CreateOptions
    from cove.runtime.cgroups import Manager
    from cove.runtime.init import InitConfig
    from cove.runtime.nsexec import Sync


def ns_plan(spec: Spec) -> NsPlan:
    plan = NsPlan()
    try:
        for ns in spec.linux.namespaces:
            if ns.path:
                plan.add_join(ns.type, ns.path)
            else:
                plan.new.append(ns.type)
    except CoveError:
        plan.close()
        raise
    # The user namespace is created first: it owns the others.
    plan.new.sort(key=lambda t: t != "user")
    plan.time_offsets = spec.linux.time_offsets
    if plan.time_offsets and "time" not in plan.new:
        plan.close()
        raise CoveError("linux.timeOffsets", "needs a new time namespace")
    return plan


def _same_ns(path: str, kind: str) -> bool:
    """Whether the namespace file `path` is the runtime's own namespace of `kind`."""
    try:
        a, b = os.stat(path), os.stat(f"/proc/self/ns/{kind}")
    except OSError:
        return False  # joining it fails later, with its own error
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _own_ns(ns: Namespace | None, kind: str, key: str) -> None:
    """A sysctl of an ipc/uts namespace: a new one, or a joined one that is not the
    host's (the runtime's own), where the write would change the host."""
    if ns is None:
        raise CoveError(f"linux.sysctl.{key}", f"needs a new {kind} namespace")
    if ns.path and _same_ns(ns.path, kind):
        raise CoveError(f"linux.sysctl.{key}", f"not allowed in the host's {kind} "
                            f"namespace ({ns.path})")


def check_sysctl(spec: Spec) -> None:
    """Only namespaced sysctls, and only those whose namespace the container owns; none
    that contradicts a field of its own. kernel.hostname is refused outright, as runc
    and crun do: it would silently override `hostname` (init writes sysctls after
    sethostname), or stand in for it. kernel.domainname only when it differs from a
    `domainname` that is set (crun's rule; runc lets the sysctl win)."""
    lin = spec.linux
    for key, value in lin.sysctl.items():
        if key == "kernel.hostname":
            raise CoveError(f"linux.sysctl.{key}", "conflicts with the `hostname` field: "
                            "set the hostname there")
        if key == "kernel.domainname" and spec.domainname and value != spec.domainname:
            raise CoveError(f"linux.sysctl.{key}", f"{value!r} conflicts with the "
                            f"`domainname` field ({spec.domainname!r})")
        if key.startswith("net."):
            # A joined one that is not the host's is the pod's (CRI's sandbox netns).
            _own_ns(lin.ns("network"), "net", key)
        elif key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                     "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                     "kernel.shm_rmid_forced") or key.startswith("fs.mqueue."):
            _own_ns(lin.ns("ipc"), "ipc", key)
        elif key in ("kernel.hostname", "kernel.domainname"):
            _own_ns(lin.ns("uts"), "uts", key)
        else:
            raise CoveError(f"linux.sysctl.{key}", "not a namespaced sysctl: it would "
                            "change the host")


def check_id_maps(spec: Spec) -> None:
    """The kernel takes a map in one write shorter than a page (oci/spec.py checks
    the rest: sizes, overflow, overlaps, at most 340 ranges)."""
    page = os.sysconf("SC_PAGE_SIZE")
    for key, maps in (("uidMappings", spec.linux.uid_mappings),
                      ("gidMappings", spec.linux.gid_mappings)):
        if not maps:
            continue
        from cove.runtime.idmaps import map_lines  # only with a user namespace
        n = len(map_lines(maps).encode())
        if n >= page:
            raise CoveError(f"linux.{key}", f"{len(maps)} ranges make {n} bytes in one "
                            f"write; the kernel takes fewer than {page} (use fewer, "
                            "larger ranges)")


def check_rootless(spec: Spec) -> None:
    """What a container needs when the runtime is not root (runc's rootless checks)."""
    lin = spec.linux
    userns = lin.ns("user")
    if userns is None:
        raise CoveError("linux.namespaces", "a rootless container needs a user namespace "
                        "(see `cove-runtime spec --rootless`)")
    if not userns.path:
        if not lin.uid_mappings:
            raise CoveError("linux.uidMappings", "a rootless container's new user "
                            "namespace needs at least one uid mapping")
        if not lin.gid_mappings:
            raise CoveError("linux.gidMappings", "a rootless container's new user "
                            "namespace needs at least one gid mapping")


# Device rules every container gets on top of its own (runc's AllowedDevices): the
# default /dev nodes, ptys, and mknod of anything (opening is what the rules guard).
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for ma, mi in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (5, 2))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]


def cgroup_resources(spec: Spec) -> dict[str, Any] | None:
    """linux.resources plus the device rules the container's own /dev needs."""
    res = spec.linux.resources
    if res is None or not isinstance(res.get("devices"), list):
        return res
    res = dict(res)
    # a device of linux.devices is allowed rwm unless linux.resources.devices says how
    # (docker's `--device /dev/X:r` gives the node and an "r" rule: no write)
    said = {(r.get("type"), r.get("major"), r.get("minor")) for r in res["devices"]
            if isinstance(r, dict) and r.get("allow")}
    res["devices"] = [*res["devices"], *DEFAULT_DEVICE_RULES,
                      *({"allow": True, "type": t, "major": d.major, "minor": d.minor,
                         "access": "rwm"}
                        for d in spec.linux.devices if d.type != "p"
                        for t in ("c" if d.type == "u" else d.type,)
                        if (t, d.major, d.minor) not in said)]
    return res


def check_preserve_fds(opts: CreateOptions) -> None:
    """The caller's fds 3..N+2 of --preserve-fds N are open (process.check_preserve_fds),
    checked first thing. The prewarm thread holds an fd of its own (the lowest free
    one: 3 when the caller passed none) through its slow write, which would pass for
    the caller's: with --preserve-fds, wait for it to finish first."""
    if not opts.preserve_fds:
        return
    if opts.warm is not None:
        opts.warm.acquire()
        opts.warm = None  # done: nothing left to wait for before fork
    process.check_preserve_fds(opts.preserve_fds)


def create(opts: CreateOptions, subreaper: bool = False) -> runtime_state.State:
    """Create the container; return its state (status created).

    The fork and its handshake with init stay here in protocol order (go, pid, start,
    hooks, ready): each step's locals (child, helper, the sockets) are what the
    cleanup below undoes, and reading the sequence whole is how it is checked."""
    from cove.runtime.cgroups import open_manager

    check_preserve_fds(opts)
    runtime_state.check_id(opts.id)
    bundle, raw, spec, rootfs = load_bundle(opts.bundle)
    _check_spec(spec, opts)
    sdir, st = _state_dir(opts, bundle, rootfs, spec)
    mgr: Manager | None = None
    child = 0
    sync: Sync | None = None
    console_fd = fifo_fd = -1
    bind_socks: tuple[int, int] | None = None
    helper = 0
    plan: NsPlan | None = None
    try:
        fifo_fd = _state_files(sdir, st, raw)
        mgr = open_manager(spec.linux.cgroups_path or None, opts.id, rootless=opts.rootless,
                           systemd=opts.systemd_cgroup)
        _setup_cgroup(mgr, spec, st)
        console_fd = _console_fd(opts)
        plan = ns_plan(spec)
        plan.cgroup_fds, plan.cgroup_dirfd = mgr.join_fds(), mgr.clone_fd()
        joined = bool(plan.cgroup_fds)
        from cove.runtime.init import container_init

        cfg, sources = _init_config(opts, spec, rootfs, fifo_fd, console_fd, mgr)
        bind_socks = cfg.bind_socks
        if subreaper:
            _become_subreaper()
        if opts.warm is not None:
            opts.warm.acquire()  # no thread may be running across fork()
        child, sync = spawn(plan, lambda s: container_init(cfg, s))
        sync.send("go")
        init_pid = _init_pid(sync, child, spec)
        os.waitpid(child, 0)
        child = 0
        _save_init(st, init_pid)
        if bind_socks is not None:
            # init waits for "start": its mount namespace exists, untouched yet
            from cove.runtime.bindsources import send_bind_sources
            helper = send_bind_sources(init_pid, sources, bind_socks)
        sync.send("start")
        # Init was born in its cgroups (the v1 ones C joined, the v2 one C was forked
        # into: Manager.join_fds, clone_fd). What could not be done so is moved now,
        # while init sets up its mounts: that waits out an RCU grace period (~12 ms
        # here). Init has no children yet and unshares its cgroupns only after this.
        if mgr.needs_apply(v1=not joined, v2=not plan.born_in_cgroup):
            mgr.apply(init_pid, v1=not joined, v2=not plan.born_in_cgroup)
        if helper:
            os.waitpid(helper, 0)
            helper = 0
        if bind_socks is not None:
            # Our copies closed, init sees the end of the channel if the helper died
            # without a word (bindsources.recv_bind_sources).
            for fd in bind_socks:
                os.close(fd)
            bind_socks = None
        _hooks_and_ready(sync, st, spec, init_pid)
        _save_created(st)
        if opts.pid_file:
            write_pid_file(opts.pid_file, init_pid)
        return st
    except BaseException:
        _undo(child, helper, st, mgr, sdir, subreaper)
        raise
    finally:
        if plan is not None:
            plan.close()  # (spawn closed P's copies already; before it, a failure)
        if sync is not None:
            sync.close()
        for fd in (console_fd, fifo_fd, *(bind_socks or ())):
            if fd >= 0:
                os.close(fd)


def _save_init(st: runtime_state.State, init_pid: int) -> None:
    """Init's pid (and its start time: is it still ours) in the state, which says
    "creating" until init is ready."""
    st.data["pid"] = init_pid
    st.data["init_start"] = runtime_state.proc_start_time(init_pid)
    st.data["creating"] = True
    st.save()


def _save_created(st: runtime_state.State) -> None:
    """The state of a container ready to start, then (last: what the native front may
    act on, cove/runtime/front.c) its `native` file."""
    del st.data["creating"]
    st.save()
    native.write(st)


def _become_subreaper() -> None:
    """`run` waits for init itself: orphans of the container come to us, not to 1."""
    from cove.sys import libc

    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)


def _console_fd(opts: CreateOptions) -> int:
    """The terminal's master for init: from --console-socket's receiver, or `run`'s own
    pty relay; -1 without a terminal."""
    if opts.console_socket:
        from cove.runtime.caller import connect_console

        return connect_console(opts.console_socket)
    return os.dup(opts.console_fd) if opts.console_fd >= 0 else -1


def _state_files(sdir: str, st: runtime_state.State, raw: bytes) -> int:
    """config.json and the exec FIFO in the state dir; a handle on the dir, which init
    opens the FIFO relative to (0711, as runc's: init may be unprivileged by then)."""
    with open(os.path.join(sdir, "config.json"), "wb") as f:
        f.write(raw)
    os.mkfifo(st.fifo, 0o622)
    os.chmod(st.fifo, 0o622)  # init may write to it as an unprivileged user
    return os.open(sdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _init_pid(sync: Sync, child: int, spec: Spec) -> int:
    """Init's pid, once the first child has forked it (writing its user namespace's id
    maps when it asks)."""
    msg = sync.recv()
    if msg == "userns":
        from cove.runtime.idmaps import write_id_maps
        write_id_maps(child, spec)
        sync.send("ok")
        msg = sync.recv()
    if msg is None or not msg.startswith("pid "):
        _fail(msg)
    return int(msg.split()[1])  # type: ignore[union-attr]


def _setup_cgroup(mgr: Manager, spec: Spec, st: runtime_state.State) -> None:
    """The container's cgroup made, kept in its state, with the spec's limits."""
    mgr.create()
    if mgr.skipped and spec.linux.ns("pid") is None:
        from cove.runtime.cgroups.fs import warn

        # As runc: without a cgroup or a pid namespace nothing can find (and kill)
        # every process of the container.
        warn("a rootless container with no cgroup and no private pid namespace: "
             "`kill --all` and `delete` cannot reach processes that leave init")
    st.data["cgroup"] = mgr.to_state()
    mgr.set(cgroup_resources(spec))


def _init_config(opts: CreateOptions, spec: Spec, rootfs: str, fifo_fd: int,
                 console_fd: int, mgr: Manager) -> tuple[InitConfig, list[tuple[int, str]]]:
    """What the container's init is handed across the fork (its seccomp program built
    here, before it), and the bind sources to open for it on the host's side."""
    from cove.runtime.init import InitConfig
    from cove.runtime.rootfs import bind_sources

    process.preload(spec.process, spec.linux.seccomp is not None)  # type: ignore[arg-type]

    cfg = InitConfig(spec, rootfs, fifo_fd, console_fd, opts.preserve_fds, opts.no_pivot,
                     mgr.mounts(), "")
    if spec.linux.seccomp is not None:
        from cove.runtime import seccomp

        cfg.seccomp = seccomp.program(
            spec.linux.seccomp, os.path.join(opts.root, seccomp.CACHE_DIR),
            spec.annotations.get(seccomp.UNKNOWN_SYSCALLS_ANNOTATION) == "ignore")
    # In a user namespace init is not the host's root: the bind sources are opened
    # on the host's side and handed over (bindsources.send_bind_sources). Not rootless:
    # joining the container's mount namespace takes the host's CAP_SYS_ADMIN, and
    # there the container's root is the caller, who can reach what the caller can.
    sources = bind_sources(spec) if spec.linux.ns("user") is not None and \
        os.geteuid() == 0 else []
    if sources:
        import _socket

        a, b = _socket.socketpair(_socket.AF_UNIX,
                                  _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        cfg.bind_socks = (a.detach(), b.detach())
    return cfg, sources


def _hooks_and_ready(sync: Sync, st: runtime_state.State, spec: Spec, init_pid: int) -> None:
    """Init has made the environment: the prestart and createRuntime hooks run, then
    wait for init to be ready (a seccomp agent hears from it first)."""
    sync.expect("hooks")
    # The environment is made (the spec's step 2): the hooks read "created"
    # (state.hook_state), though `state` says "creating" until init is ready.
    hs = st.hook_state("created")
    if spec.hooks.prestart or spec.hooks.createRuntime:
        from cove.runtime.hooks import run_hooks  # most containers have none

        run_hooks("prestart", spec.hooks.prestart, hs)
        run_hooks("createRuntime", spec.hooks.createRuntime, hs)
    sync.send(f"ok {hs}")
    if spec.linux.seccomp is not None:
        from cove.runtime import seccomp  # imported already: the program was built
    if spec.linux.seccomp is not None and seccomp.wants_notify(spec.linux.seccomp):
        from cove.oci import jsonio

        # A seccomp agent hears from init before create is done: "creating", as
        # runc tells it.
        seccomp.expect_after_notify(sync, "ready", init_pid, spec.linux.seccomp or {},
                               jsonio.loads(st.hook_state("creating")))
    else:
        sync.expect("ready")


def _check_spec(spec: Spec, opts: CreateOptions) -> None:
    """What create refuses before anything is made, each in one line."""
    # Refused by design (README, cove-runtime): in the host's mount namespace, be it
    # none asked for or the runtime's own joined by path, the container's mounts,
    # masked and read-only paths, /dev and pivot_root would all land on the host, for
    # every process there. runc goes ahead; Cove says so in one line, before anything
    # is made.
    mnt = spec.linux.ns("mount")
    if mnt is None:
        raise CoveError("linux.namespaces", "a container needs a mount namespace of its "
                        "own, not the host's")
    if mnt.path and _same_ns(mnt.path, "mnt"):
        i = spec.linux.namespaces.index(mnt)
        raise CoveError(f"linux.namespaces[{i}].path", f"{mnt.path} is the host's mount "
                        "namespace: a container needs a mount namespace of its own, not "
                        "the host's")
    check_sysctl(spec)
    if opts.rootless or os.geteuid() != 0:
        check_rootless(spec)
    check_id_maps(spec)
    process.check_unknown_caps(spec.process, spec.annotations)
    if spec.linux.intel_rdt:
        raise CoveError("linux.intelRdt", "not supported on this host")


def _state_dir(opts: CreateOptions, bundle: str, rootfs: str,
               spec: Spec) -> tuple[str, runtime_state.State]:
    """The container's state dir (refused if it exists) and its first state."""
    os.makedirs(opts.root, 0o700, exist_ok=True)
    sdir = os.path.join(opts.root, opts.id)
    try:
        os.mkdir(sdir, 0o711)
        os.chmod(sdir, 0o711)  # whatever the umask
    except FileExistsError:
        raise CoveError(f"container {opts.id!r}", "already exists") from None
    st = runtime_state.State(opts.root, opts.id, {
        "id": opts.id, "pid": 0, "bundle": bundle, "rootfs": rootfs,
        "created": runtime_state.rfc3339(time.time_ns()), "owner": "root" if os.geteuid() == 0 else
        str(os.geteuid()), "annotations": spec.annotations, "rootless": opts.rootless,
    })
    return sdir, st


def _undo(child: int, helper: int, st: runtime_state.State, mgr: Manager | None,
          sdir: str, subreaper: bool) -> None:
    """A failed create leaves nothing: its processes killed, its cgroup and state dir
    removed."""
    for c in (child, helper):
        if c:
            try:
                os.kill(c, 9)
                os.waitpid(c, 0)
            except OSError:
                pass
    pid = st.pid
    if pid:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        if subreaper:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
    if mgr is not None:
        try:
            mgr.destroy()
        except (OSError, CoveError):
            pass
    runtime_state.remove_dir(sdir)


def _fail(msg: str | None) -> None:
    if msg is None:
        raise CoveError("container init", "exited during setup")
    if msg.startswith("error "):
        raise CoveError(msg[6:])
    raise CoveError("container init", f"unexpected message {msg!r}")
