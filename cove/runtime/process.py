"""The last steps inside the container before execve, shared by init and exec:
terminal, rlimits, user and capabilities, no_new_privs, seccomp, fd hygiene, exec.
"""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.runtime import trampoline
from cove.sys import caps as capabilities
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:

    from cove.oci.spec import Process
    from cove.runtime.nsexec import Sync
    from cove.runtime.seccomp import Program

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414


def preload(proc: Process, with_seccomp: bool) -> None:
    """Import, in the runtime, every module the container side will need: once it is
    past pivot_root (or setns into the mount namespace) the host's Python library is
    out of reach, and a lazy import there would fail."""
    capabilities.last_cap()  # read on the host, before fork (see caps.last_cap)
    if proc.rlimits:
        import resource  # noqa: F401
    if proc.terminal:
        import _socket  # noqa: F401
        import fcntl  # noqa: F401
    if with_seccomp:
        from cove.runtime import seccomp  # noqa: F401  (Program.load runs after pivot)


UNKNOWN_CAPS_ANNOTATION = "io.cove.unknown-caps"


def check_unknown_caps(proc: Process | None, annotations: dict[str, str]) -> None:
    """Capabilities the running kernel does not know (above cap_last_cap) are an error
    naming the first one's JSON path: asking for a capability and silently not getting
    it hides a misconfiguration. runc warns and leaves them out instead, so engines that
    pass every capability they know (`--privileged`) still work on older kernels: the
    annotation `io.cove.unknown-caps: ignore` asks for that (one warning line). Names
    no kernel knows are errors in any case (oci/spec.py)."""
    caps = proc.capabilities if proc is not None else None
    if caps is None:
        return
    top = capabilities.last_cap()
    unknown: list[str] = []
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        for i, name in enumerate(getattr(caps, kind)):
            if capabilities.CAPS[name] > top:
                unknown.append(f"process.capabilities.{kind}[{i}] {name}")
    if not unknown:
        return
    if annotations.get(UNKNOWN_CAPS_ANNOTATION) == "ignore":
        os.write(2, (f"cove-runtime: warning: ignoring capabilities this kernel does not "
                     f"know (cap_last_cap {top}): {', '.join(unknown)}\n").encode())
        return
    path, name = unknown[0].split(" ")
    more = f"; also {', '.join(unknown[1:])}" if unknown[1:] else ""
    raise CoveError(path, f"{name} is not known to the running kernel (cap_last_cap {top}"
                          f"{more}); annotation {UNKNOWN_CAPS_ANNOTATION}=ignore leaves "
                          f"such capabilities out instead")


def check_preserve_fds(n: int) -> None:
    """--preserve-fds N hands the caller's fds 3..N+2 to the container: each must be
    open when the runtime starts, checked before it opens any fd of its own (one of
    those would otherwise take a missing number and be passed on in its place)."""
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise CoveError(f"--preserve-fds {n}", f"fd {fd} is not open (the caller "
                            f"passes fds 3 to {2 + n})") from None


def env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env:
        k, sep, v = e.partition("=")
        if sep:
            out[k] = v
    return out


def lookup_exec(arg0: str, env: dict[str, str]) -> str:
    """Resolve argv[0] against the container's PATH (as runc, at create time)."""
    if "/" in arg0:
        cands = [arg0]
    else:
        cands = [os.path.join(d or ".", arg0) for d in env.get("PATH", DEFAULT_PATH).split(":")]
    for c in cands:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o100000 and st.st_mode & 0o111:
            return c
    if "/" in arg0:
        # why, as Go's exec.LookPath (runc) says it: the engine maps these to docker's
        # exit statuses (126 for a directory or a file it may not run, 127 otherwise)
        try:
            st = os.stat(arg0)
        except OSError:
            raise CoveError(f"exec: {arg0!r}", "no such executable file") from None
        raise CoveError(f"exec: {arg0!r}", "is a directory"
                        if st.st_mode & 0o170000 == 0o040000 else "permission denied")
    raise CoveError(f"exec: {arg0!r}", "executable file not found in $PATH")


def setup_console(sock_fd: int, size: tuple[int, int] | None, bind_console: bool) -> None:
    """Make a pty in the container's devpts, send its master over the console socket
    (SCM_RIGHTS, as runc), and make the slave our controlling terminal and stdio."""
    import _socket
    import fcntl

    master, slave = os.openpty()
    try:
        if size is not None:
            h, w = size
            ws = h.to_bytes(2, "little") + w.to_bytes(2, "little") + bytes(4)
            fcntl.ioctl(slave, _TIOCSWINSZ, ws)
        if bind_console:
            _bind_console(slave)
        sock = _socket.socket(fileno=sock_fd)
        try:
            sock.sendmsg([os.ttyname(slave).encode()],
                         [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                           master.to_bytes(4, "little"))])
        finally:
            sock.close()
    finally:
        os.close(master)
    os.setsid() if os.getsid(0) != os.getpid() else None
    fcntl.ioctl(slave, _TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _bind_console(slave: int) -> None:
    """Bind the pty slave on /dev/console, from and onto handles (CVE-2025-52565: an
    image's /dev/console symlink to, say, /proc/sys/kernel/core_pattern made the bind
    land on that file, or a swapped /dev/pts/N made a host file the container's
    console, before maskedPaths and readonlyPaths were in place)."""
    import stat

    try:
        st = os.stat("/dev/console", follow_symlinks=False)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            os.unlink("/dev/console")  # a symlink (or worse) planted by the image
            raise FileNotFoundError
    except FileNotFoundError:
        os.close(os.open("/dev/console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600))
    fd = os.open("/dev/console", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise CoveError("/dev/console", "not a file or a character device")
        if os.path.isdir("/proc/self/fd"):
            libc.mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{fd}", None, libc.MS_BIND)
        else:
            libc.mount(os.ttyname(slave), "/dev/console", None, libc.MS_BIND)
    finally:
        os.close(fd)


def apply_rlimits(proc: Process) -> None:
    # preload() imports `resource` only when there are rlimits; this runs after
    # pivot_root, so with none (docker's default spec) an import here would fail.
    if not proc.rlimits:
        return
    import resource

    for r in proc.rlimits:
        try:
            resource.setrlimit(r.resource, (r.soft, r.hard))
        except (OSError, ValueError) as e:
            raise CoveError(f"process.rlimits {r.type}",
                            f"cannot set {r.soft}/{r.hard}: {e}") from None


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd", "rb") as f:
            for line in f:
                parts = line.decode(errors="replace").rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


KEEP_GROUPS = "run.oci.keep_original_groups"  # crun's annotation (podman's keep-groups)


def apply_user_caps(proc: Process, setgroups_ok: bool, keep_groups: bool = False) -> None:
    """Switch to process.user keeping exactly the requested capabilities; with
    `keep_groups` (the annotation above is "1") no setgroups(2): the process keeps the
    caller's supplementary groups, as crun does for podman's --group-add keep-groups."""
    caps = proc.capabilities
    user = proc.user
    if caps is not None:
        keep = capabilities.mask(caps.bounding)
        for bit in range(capabilities.last_cap() + 1):
            if not keep & (1 << bit):
                libc.prctl(libc.PR_CAPBSET_DROP, bit)
        libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    try:
        if keep_groups:
            pass
        elif setgroups_ok:
            os.setgroups(user.additional_gids)
        elif user.additional_gids:
            raise CoveError("process.user.additionalGids",
                            "setgroups is denied in this user namespace")
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise CoveError(f"process.user {user.uid}:{user.gid}", os_why(e)) from None
    if caps is not None:
        libc.prctl(libc.PR_SET_KEEPCAPS, 0)
        eff = capabilities.mask(caps.effective)
        perm = capabilities.mask(caps.permitted)
        inh = capabilities.mask(caps.inheritable)
        try:
            libc.capset(eff, perm, inh)
        except OSError as e:
            raise CoveError("process.capabilities", os_why(e)) from None
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
        for name in caps.ambient:
            bit = capabilities.CAPS[name]
            # The kernel refuses an ambient cap that is not also permitted and
            # inheritable; runc then goes on without it, and so do we.
            if bit <= capabilities.last_cap() and perm & inh & (1 << bit):
                libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_RAISE, bit)


def enter_cwd(cwd: str, create: bool) -> None:
    """chdir to process.cwd, resolved inside the container's root and never through a
    /proc magic link. CVE-2024-21626: cwd "/proc/self/fd/N" named a host directory the
    runtime still held open, and the container started outside its rootfs (os.makedirs
    on such a path would even create directories on the host)."""
    fd = _open_cwd(cwd, create)
    try:
        os.fchdir(fd)
        os.getcwd()  # ENOENT if the cwd is not under our root
    except OSError as e:
        raise CoveError(f"process.cwd {cwd}", os_why(e)) from None
    finally:
        os.close(fd)


def make_cwd(cwd: str) -> None:
    """Create process.cwd where missing, without entering it: init does this before the
    root is remounted read-only (as runc and crun), and enters it only once every mount
    is in place (entering earlier would leave it on whatever a later mount covers)."""
    os.close(_open_cwd(cwd, True))


def _open_cwd(cwd: str, create: bool) -> int:
    """An O_PATH handle on `cwd` resolved inside the root (see enter_cwd), creating
    missing components when asked."""
    what = f"process.cwd {cwd}"
    if not cwd.startswith("/"):
        raise CoveError(what, "must be an absolute path")
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    res = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
    root = os.open("/", flags)
    fd = -1
    try:
        try:
            fd = libc.openat2(root, cwd, flags, resolve=res)
        except OSError as e:
            if e.errno != 2 or not create:
                raise
            # Create what is missing one component at a time, each in a directory
            # that was itself resolved inside the root.
            parts = [p for p in cwd.split("/") if p]
            fd = os.dup(root)
            for i, name in enumerate(parts):
                try:
                    nfd = libc.openat2(root, "/".join(parts[:i + 1]), flags, resolve=res)
                except OSError as e2:
                    if e2.errno != 2:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    nfd = libc.openat2(root, "/".join(parts[:i + 1]), flags, resolve=res)
                os.close(fd)
                fd = nfd
        got, fd = fd, -1
        return got
    except OSError as e:
        raise CoveError(what, os_why(e)) from None
    finally:
        os.close(root)
        if fd >= 0:
            os.close(fd)


def close_fds(keep: set[int]) -> None:
    """Close every fd not in `keep`: nothing of the runtime's may reach the container
    (CVE-2024-21626 leaked a host directory fd as the process's cwd)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() != b"deny"
    except OSError:
        return True


def check_lsm(proc: Process) -> None:
    if proc.apparmor_profile and not os.path.exists("/sys/kernel/security/apparmor"):
        # runc ignores the profile when AppArmor is off; so does Cove, but says so.
        os.write(2, b"cove-runtime: warning: apparmor is not enabled on this host; "
                    b"process.apparmorProfile ignored\n")
    if proc.selinux_label and not os.path.exists("/sys/fs/selinux/enforce"):
        os.write(2, b"cove-runtime: warning: selinux is not enabled on this host; "
                    b"process.selinuxLabel ignored\n")
    if proc.scheduler is not None:
        raise CoveError("process.scheduler", "not supported yet")
    if proc.io_priority is not None:
        raise CoveError("process.ioPriority", "not supported yet")


class Prepared:
    """What is left to do right before execve, once `prepare_exec` has run."""

    __slots__ = ("args", "env", "exe", "seccomp", "tramp")

    def __init__(self, exe: str, args: list[str], env: dict[str, str],
                 seccomp: Program | None, tramp: int) -> None:
        self.exe = exe
        self.args = args
        self.env = env
        self.seccomp = seccomp
        self.tramp = tramp


def prepare_exec(proc: Process, seccomp: Program | None, sync: Sync, userns: bool,
                 preserve_fds: int, keep: set[int], keep_groups: bool = False) -> Prepared:
    """The steps init and exec share once inside the container, up to (not including)
    the last message to the runtime: resolve the binary, seccomp, user and
    capabilities, no_new_privs, fds, umask. `keep` names extra fds to leave open."""
    env = env_dict(proc.env)
    env.setdefault("HOME", home_of(proc.user.uid))
    exe = lookup_exec(proc.args[0], env)
    if seccomp is not None:
        from cove.runtime.seccomp import hand_over

        if not proc.no_new_privileges:
            # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
            # while we still have it (as runc does).
            nfd = seccomp.load()
            if nfd >= 0:
                hand_over(sync, nfd)
            seccomp = None
    apply_user_caps(proc, setgroups_allowed(), keep_groups)
    if not userns:
        # Changing uid resets the dumpable flag; stay undumpable until execve.
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
    if proc.no_new_privileges:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    preserved = set(range(3, 3 + preserve_fds))
    for fd in preserved:
        try:
            os.set_inheritable(fd, True)
        except OSError as e:
            raise CoveError(f"--preserve-fds {preserve_fds}", f"fd {fd}: {os_why(e)}") \
                from None
    tramp = trampoline.make()  # see trampoline.py: CVE-2019-5736
    close_fds({0, 1, 2, sync.rfd, sync.wfd, tramp} | keep | preserved)
    os.umask(proc.user.umask if proc.user.umask is not None else 0o022)
    # Python starts with SIGPIPE and SIGXFSZ ignored, and an ignored signal stays
    # ignored across execve: the container's `yes | head -1` would then meet EPIPE
    # ("Broken pipe") instead of dying quietly of SIGPIPE. Back to the defaults, as a
    # process started by runc (Go leaves them alone) has them.
    import _signal
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    if seccomp is not None and seccomp.notify:
        # The listener fd goes to the runtime over the channel: load while it listens.
        from cove.runtime.seccomp import hand_over

        hand_over(sync, seccomp.load())
        seccomp = None
    return Prepared(exe, proc.args, env, seccomp, tramp)


def final_exec(prep: Prepared) -> None:
    """Load a pending seccomp filter (as close to execve as possible: fewer syscalls to
    allow) and exec through the trampoline. Returns only by raising OSError."""
    if prep.seccomp is not None:
        prep.seccomp.load()
    trampoline.execve(prep.tramp, prep.exe, prep.args, prep.env)
