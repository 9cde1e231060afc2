"""`create`: build the container and leave its init blocked before execve.

Everything this verb creates (state dir, cgroup, init process, mounts in the
container's namespace) is undone if any step fails: bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import time

from cove.errors import CoveError, os_why
from cove.oci.spec import Spec
from cove.runtime import process
from cove.runtime import state as runtime_state
from cove.runtime.caller import load_bundle, write_pid_file
from cove.runtime.nsexec import NsPlan, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.oci.spec import IDMap, Namespace
    from cove.runtime import CreateOptions
    from cove.runtime.cgroups import Manager
    from cove.runtime.nsexec import Sync


def write_id_maps(pid: int, spec: Spec) -> None:
    """Write the uid/gid maps of the user namespace `pid` just created.

    Root writes them directly. Anyone else may write one line mapping its own uid
    (gid) directly (for gids, only once /proc/PID/setgroups says "deny"); several
    ranges, or other ids, go through the setuid helpers newuidmap/newgidmap, which
    allow the ranges /etc/subuid and /etc/subgid grant the caller."""
    lin = spec.linux
    if os.geteuid() == 0:
        for key, file, maps in (("gidMappings", "gid_map", lin.gid_mappings),
                                ("uidMappings", "uid_map", lin.uid_mappings)):
            if maps:
                try:
                    _write(f"/proc/{pid}/{file}", _map_lines(maps))
                except OSError as e:
                    raise CoveError(f"linux.{key}", os_why(e)) from None
        return
    for key, file, maps, own in (("gidMappings", "gid_map", lin.gid_mappings, os.getegid()),
                                 ("uidMappings", "uid_map", lin.uid_mappings, os.geteuid())):
        if not maps:
            continue
        if len(maps) == 1 and maps[0].host_id == own and maps[0].size == 1:
            try:
                if file == "gid_map":
                    _write(f"/proc/{pid}/setgroups", "deny")
                _write(f"/proc/{pid}/{file}", _map_lines(maps))
            except OSError as e:
                raise CoveError(f"linux.{key}", os_why(e)) from None
        else:
            _newidmap("newuidmap" if file == "uid_map" else "newgidmap", pid, maps,
                      f"linux.{key}")


def _map_lines(maps: list[IDMap]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


_HELPER_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")


def _newidmap(helper: str, pid: int, maps: list[IDMap], what: str) -> None:
    """Run newuidmap/newgidmap PID ID HOSTID SIZE...; its complaint becomes the error."""
    exe = next((p for p in (os.path.join(d, helper) for d in _HELPER_DIRS)
                if os.access(p, os.X_OK)), "")
    if not exe:
        raise CoveError(what, f"{len(maps)} ranges (or ids other than our own) need "
                        f"{helper}, which is not installed (Debian: the uidmap package)")
    argv = [helper, str(pid)]
    for m in maps:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    r, w = os.pipe()
    try:
        try:
            child = os.posix_spawn(exe, argv, {"PATH": "/usr/bin:/bin"}, file_actions=[
                (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
        except OSError as e:
            raise CoveError(what, f"{exe}: {os_why(e)}") from None
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        _, status = os.waitpid(child, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        lines = out.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {code}"
        raise CoveError(what, f"{helper} failed: {why} (see /etc/sub{helper[3:6]})")


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


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
        n = len(_map_lines(maps).encode()) if maps else 0
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
    """Create the container; return its state (status created)."""
    from cove.runtime.cgroups import open_manager

    check_preserve_fds(opts)
    runtime_state.check_id(opts.id)
    bundle, raw, spec, rootfs = load_bundle(opts.bundle)
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
    rootless = opts.rootless or os.geteuid() != 0
    if rootless:
        check_rootless(spec)
    check_id_maps(spec)
    process.check_unknown_caps(spec.process, spec.annotations)
    if spec.linux.intel_rdt:
        raise CoveError("linux.intelRdt", "not supported on this host")
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
    mgr: Manager | None = None
    child = 0
    sync: Sync | None = None
    console_fd = fifo_fd = -1
    bind_socks: tuple[int, int] | None = None
    helper = 0
    plan: NsPlan | None = None
    try:
        with open(os.path.join(sdir, "config.json"), "wb") as f:
            f.write(raw)
        os.mkfifo(st.fifo, 0o622)
        os.chmod(st.fifo, 0o622)  # init may write to it as an unprivileged user
        # init opens the fifo relative to this handle on the state dir (0711, as runc's:
        # init may be an unprivileged user by then).
        fifo_fd = os.open(sdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mgr = open_manager(spec.linux.cgroups_path or None, opts.id, rootless=opts.rootless,
                           systemd=opts.systemd_cgroup)
        mgr.create()
        if mgr.skipped and spec.linux.ns("pid") is None:
            from cove.runtime.cgroups.fs import warn

            # As runc: without a cgroup or a pid namespace nothing can find (and kill)
            # every process of the container.
            warn("a rootless container with no cgroup and no private pid namespace: "
                 "`kill --all` and `delete` cannot reach processes that leave init")
        st.data["cgroup"] = mgr.to_state()
        mgr.set(cgroup_resources(spec))
        if opts.console_socket:
            from cove.runtime.caller import connect_console

            console_fd = connect_console(opts.console_socket)
        elif opts.console_fd >= 0:
            console_fd = os.dup(opts.console_fd)  # `run`'s own pty relay
        plan = ns_plan(spec)
        plan.cgroup_fds = mgr.join_fds()
        joined = bool(plan.cgroup_fds)
        from cove.runtime.init import InitConfig, container_init
        from cove.runtime.rootfs import bind_sources, send_bind_sources

        process.preload(spec.process, spec.linux.seccomp is not None)  # type: ignore[arg-type]

        cfg = InitConfig(spec, rootfs, fifo_fd, console_fd, opts.preserve_fds, opts.no_pivot,
                         mgr.mounts(), "")
        # In a user namespace init is not the host's root: the bind sources are opened
        # on the host's side and handed over (rootfs.send_bind_sources). Not rootless:
        # joining the container's mount namespace takes the host's CAP_SYS_ADMIN, and
        # there the container's root is the caller, who can reach what the caller can.
        sources = bind_sources(spec) if spec.linux.ns("user") is not None and \
            os.geteuid() == 0 else []
        if sources:
            import _socket

            a, b = _socket.socketpair(_socket.AF_UNIX,
                                      _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
            cfg.bind_socks = bind_socks = (a.detach(), b.detach())
        if spec.linux.seccomp is not None:
            from cove.runtime import seccomp

            cfg.seccomp = seccomp.program(
                spec.linux.seccomp, os.path.join(opts.root, seccomp.CACHE_DIR),
                spec.annotations.get(seccomp.UNKNOWN_SYSCALLS_ANNOTATION) == "ignore")
        if subreaper:
            from cove.sys import libc

            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        if opts.warm is not None:
            opts.warm.acquire()  # no thread may be running across fork()
        child, sync = spawn(plan, lambda s: container_init(cfg, s))
        sync.send("go")
        msg = sync.recv()
        if msg == "userns":
            write_id_maps(child, spec)
            sync.send("ok")
            msg = sync.recv()
        if msg is None or not msg.startswith("pid "):
            _fail(msg)
        init_pid = int(msg.split()[1])  # type: ignore[union-attr]
        os.waitpid(child, 0)
        child = 0
        st.data["pid"] = init_pid
        st.data["init_start"] = runtime_state.proc_start_time(init_pid)
        st.data["creating"] = True  # `state` says "creating" until init is ready
        st.save()
        if bind_socks is not None:
            # init waits for "start": its mount namespace exists, untouched yet
            helper = send_bind_sources(init_pid, sources, bind_socks)
        sync.send("start")
        # Init was born in its v1 cgroups (C joined them: Manager.join_fds). Move it
        # into the rest (v2) while it sets up its mounts: that first migration waits
        # out an RCU grace period (~12 ms here), which this overlaps. Init has no
        # children yet and unshares its cgroup namespace only after this.
        if mgr.needs_apply(v1=not joined):
            mgr.apply(init_pid, v1=not joined)
        if helper:
            os.waitpid(helper, 0)
            helper = 0
        if bind_socks is not None:
            # Our copies closed, init sees the end of the channel if the helper died
            # without a word (rootfs.recv_bind_sources).
            for fd in bind_socks:
                os.close(fd)
            bind_socks = None
        sync.expect("hooks")
        # The environment is made (the spec's step 2): the hooks read "created"
        # (state.hook_state), though `state` says "creating" until init is ready.
        hs = st.hook_state("created")
        if spec.hooks.prestart or spec.hooks.createRuntime:
            from cove.runtime.hooks import run_hooks  # most containers have none

            run_hooks("prestart", spec.hooks.prestart, hs)
            run_hooks("createRuntime", spec.hooks.createRuntime, hs)
        sync.send(f"ok {hs}")
        if spec.linux.seccomp is not None and seccomp.wants_notify(spec.linux.seccomp):
            from cove.oci import jsonio

            # A seccomp agent hears from init before create is done: "creating", as
            # runc tells it.
            seccomp.expect_after_notify(sync, "ready", init_pid, spec.linux.seccomp or {},
                                   jsonio.loads(st.hook_state("creating")))
        else:
            sync.expect("ready")
        del st.data["creating"]
        st.save()
        if opts.pid_file:
            write_pid_file(opts.pid_file, init_pid)
        return st
    except BaseException:
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
        raise
    finally:
        if plan is not None:
            plan.close()  # (spawn closed P's copies already; before it, a failure)
        if sync is not None:
            sync.close()
        for fd in (console_fd, fifo_fd, *(bind_socks or ())):
            if fd >= 0:
                os.close(fd)


def _fail(msg: str | None) -> None:
    if msg is None:
        raise CoveError("container init", "exited during setup")
    if msg.startswith("error "):
        raise CoveError(msg[6:])
    raise CoveError("container init", f"unexpected message {msg!r}")
