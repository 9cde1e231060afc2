"""The container's init (G of nsexec), from its first instruction to execve.

Runs as pid 1 of the new pid namespace. It reports to the runtime over the sync
channel ("hooks" when mounts are ready, "ready" when it waits for `start`), then
blocks opening the exec fifo until `start` opens its other end.
"""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.oci import jsonio
from cove.runtime import process
from cove.runtime.rootfs import RootfsBuilder, bind_sources, open_proc
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import Linux, Spec
    from cove.runtime.nsexec import Sync
    from cove.runtime.seccomp import Program


class InitConfig:
    """What init needs that is not in the spec: fds and paths opened by the runtime."""

    def __init__(self, spec: Spec, rootfs: str, fifo_fd: int, console_fd: int,
                 preserve_fds: int, no_pivot: bool, cgroup_mounts: list[tuple[str, str]],
                 hook_state: str) -> None:
        self.spec = spec
        self.rootfs = rootfs
        self.fifo_fd = fifo_fd
        self.console_fd = console_fd
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.cgroup_mounts = cgroup_mounts
        self.hook_state = hook_state
        self.seccomp: Program | None = None  # compiled (or cached) by the runtime
        # (init's end, the runtime's end) of the pair the bind sources come over, when
        # the runtime opens them on the host's side (bindsources.send_bind_sources).
        self.bind_socks: tuple[int, int] | None = None


def container_init(cfg: InitConfig, sync: Sync) -> None:
    spec = cfg.spec
    proc = spec.process
    assert proc is not None
    lin = spec.linux
    os.setsid()
    userns = lin.ns("user") is not None
    _undumpable_and_lo(lin, userns)
    mntns = lin.ns("mount")
    builder = RootfsBuilder(spec, cfg.rootfs, cfg.cgroup_mounts, userns,
                            lin.ns("cgroup") is not None and not lin.ns("cgroup").path)  # type: ignore[union-attr]
    if cfg.bind_socks is not None:  # a user namespace's bind sources (not on run's path)
        from cove.runtime.bindsources import recv_bind_sources
        builder.sources = recv_bind_sources(*cfg.bind_socks, bind_sources(spec))
        cfg.bind_socks = None
    if mntns is not None:
        builder.prepare()
    sync.send("hooks")
    cfg.hook_state = sync.expect("ok")[3:]  # the runtime sends the state hooks read
    hook_env: dict[str, str] = {}
    if spec.hooks.createContainer or spec.hooks.startContainer:
        # Imported only here, before pivot_root hides Cove's source: most containers
        # have no hooks, and create's import budget is shared with this module.
        from cove.runtime.hooks import run_hooks

        cfg.hook_state = _container_view(cfg.hook_state)
        hook_env = process.env_dict(proc.env)
    cgns = lin.ns("cgroup")
    if cgns is not None and not cgns.path:
        # Now that the runtime has put us in our cgroup, it becomes our namespace root.
        libc.unshare(libc.CLONE_NEWCGROUP)
    if spec.hooks.createContainer:
        run_hooks("createContainer", spec.hooks.createContainer, cfg.hook_state, hook_env)
    # /dev/console as the log (cove/runtime/logconsole.py: the engine's --systemd)
    log_console_wanted = mntns is not None and not proc.terminal and \
        spec.annotations.get("io.cove.console") == "log"
    if log_console_wanted:
        from cove.runtime import logconsole  # before pivot_root: cove's files are outside
    if mntns is not None:
        builder.pivot(cfg.no_pivot)
    else:
        os.chroot(cfg.rootfs)
        os.chdir("/")
    _names_and_sysctls(spec)
    if proc.terminal:
        if cfg.console_fd < 0:
            raise CoveError("process.terminal", "a terminal needs --console-socket")
        process.setup_console(cfg.console_fd, proc.console_size, bind_console=mntns is not None)
    log_console = -1
    if log_console_wanted:
        log_console = logconsole.make()  # before finish(): /dev may turn read-only
    if mntns is not None:
        # Before finish() remounts a read-only root: a missing cwd is made while it
        # still can be (runc and crun do the same).
        process.make_cwd(proc.cwd)
        builder.finish()
    if proc.oom_score_adj is not None:
        _oom_score_adj(proc.oom_score_adj)
    process.apply_rlimits(proc)
    if lin.personality is not None:
        libc.personality(0x0008 if lin.personality["domain"] == "LINUX32" else 0)
    process.check_lsm(proc)
    process.enter_cwd(proc.cwd, create=mntns is None)
    prep = process.prepare_exec(proc, cfg.seccomp, sync, userns, cfg.preserve_fds,
                                {cfg.fifo_fd, log_console} - {-1},
                                spec.annotations.get(process.KEEP_GROUPS) == "1")
    sync.send("ready")
    sync.close()
    _wait_for_start(cfg.fifo_fd)
    if spec.hooks.startContainer:
        run_hooks("startContainer", spec.hooks.startContainer, cfg.hook_state, hook_env)
    if log_console >= 0:
        logconsole.relay(log_console)
    try:
        process.final_exec(prep)
    except OSError as e:
        os.write(2, f"cove-runtime: exec {proc.args[0]}: {os_why(e)}\n".encode())
        os._exit(127)


def _undumpable_and_lo(lin: Linux, userns: bool) -> None:
    """First things in the new namespaces: init made undumpable, `lo` brought up."""
    if not userns:
        # Keep the container's processes from ptracing or reading /proc of an init
        # that still holds host fds (CVE-2016-9962). In a user namespace (rootless
        # always) it would make our own /proc/self files unwritable to us: until
        # execve our mm belongs to the host's user namespace, so an undumpable init's
        # /proc files are owned by the host's root, unmapped here. The fds are CLOEXEC
        # there anyway, and the fifo handle is O_PATH on a 0711 state dir.
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
    netns = lin.ns("network")
    if netns is not None and not netns.path:
        # A network namespace we created has only `lo`, and down: runc brings it up
        # (libcontainer's "loopback" network), so services on 127.0.0.1 answer inside
        # a container without networking. A joined namespace is its owner's business.
        try:
            libc.link_up("lo")
        except OSError as e:
            raise CoveError("network namespace", f"bring up lo: {os_why(e)}") from None


def _names_and_sysctls(spec: Spec) -> None:
    """After pivot_root: the UTS namespace's host and domain names, the sysctls."""
    lin = spec.linux
    if lin.ns("uts") is not None and not lin.ns("uts").path:  # type: ignore[union-attr]
        if spec.hostname:
            libc.sethostname(spec.hostname)
        if spec.domainname:
            libc.setdomainname(spec.domainname)
    for key, value in lin.sysctl.items():
        _sysctl(key, value)


def _oom_score_adj(value: int) -> None:
    try:
        fd = open_proc("self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CoveError("process.oomScoreAdj", os_why(e)) from None


def _wait_for_start(fifo_fd: int) -> None:
    """Block until `start` opens the FIFO's read end. It is reached through an O_PATH
    handle on the state dir taken before pivot_root: not through /proc/self/fd, which
    a non-dumpable process that changed uid may no longer traverse."""
    fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fifo_fd)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def _container_view(hook_state: str) -> str:
    """The state for hooks run in the container's namespaces (createContainer,
    startContainer): the spec gives them the pid as the container sees it (1 in a pid
    namespace of its own), not the runtime's."""
    d = jsonio.loads(hook_state)
    d["pid"] = os.getpid()
    return jsonio.dumps(d)


def _sysctl(key: str, value: str) -> None:
    rel = key.replace(".", "/")
    if ".." in rel.split("/"):
        raise CoveError(f"linux.sysctl.{key}", "invalid name")
    try:
        fd = open_proc(f"sys/{rel}", os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CoveError(f"linux.sysctl.{key}", os_why(e)) from None
