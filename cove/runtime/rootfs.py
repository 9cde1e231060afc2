"""The container's filesystem: mounts, devices, pivot_root, masked and read-only paths.

Runs in the container's init, in its new mount namespace. Every target inside the
rootfs is resolved with symlinks evaluated *inside* the rootfs and then opened with
openat2(RESOLVE_IN_ROOT); the mount goes onto /proc/self/fd/N of that handle, so a
symlink swapped in by a hostile image between check and mount (CVE-2021-30465)
cannot point a mount outside the container.
"""

from __future__ import annotations

import os
import stat

from cove.errors import CoveError
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import Mount, Spec

# option -> (set flags, clear flags)
_FLAGS: dict[str, tuple[int, int]] = {
    "async": (0, libc.MS_SYNCHRONOUS), "atime": (0, libc.MS_NOATIME), "bind": (libc.MS_BIND, 0),
    "defaults": (0, 0), "dev": (0, libc.MS_NODEV), "diratime": (0, libc.MS_NODIRATIME),
    "dirsync": (libc.MS_DIRSYNC, 0), "exec": (0, libc.MS_NOEXEC), "mand": (libc.MS_MANDLOCK, 0),
    "noatime": (libc.MS_NOATIME, 0), "nodev": (libc.MS_NODEV, 0),
    "nodiratime": (libc.MS_NODIRATIME, 0), "noexec": (libc.MS_NOEXEC, 0),
    "nomand": (0, libc.MS_MANDLOCK), "norelatime": (0, libc.MS_RELATIME),
    "nostrictatime": (0, libc.MS_STRICTATIME), "nosuid": (libc.MS_NOSUID, 0),
    "rbind": (libc.MS_BIND | libc.MS_REC, 0), "relatime": (libc.MS_RELATIME, 0),
    "remount": (libc.MS_REMOUNT, 0), "ro": (libc.MS_RDONLY, 0), "rw": (0, libc.MS_RDONLY),
    "silent": (libc.MS_SILENT, 0), "strictatime": (libc.MS_STRICTATIME, 0),
    "suid": (0, libc.MS_NOSUID), "sync": (libc.MS_SYNCHRONOUS, 0),
    "nosymfollow": (libc.MS_NOSYMFOLLOW, 0), "lazytime": (libc.MS_LAZYTIME, 0),
    "rro": (libc.MS_RDONLY, 0), "rrw": (0, libc.MS_RDONLY),
}
_PROPAGATION = {
    "private": libc.MS_PRIVATE, "rprivate": libc.MS_PRIVATE | libc.MS_REC,
    "shared": libc.MS_SHARED, "rshared": libc.MS_SHARED | libc.MS_REC,
    "slave": libc.MS_SLAVE, "rslave": libc.MS_SLAVE | libc.MS_REC,
    "unbindable": libc.MS_UNBINDABLE, "runbindable": libc.MS_UNBINDABLE | libc.MS_REC,
}
# Flags kept by the kernel on a bind mount that a read-only remount must repeat.
_LOCKED = ((0x2, libc.MS_NOSUID), (0x4, libc.MS_NODEV), (0x8, libc.MS_NOEXEC),
           (0x400, libc.MS_NOATIME), (0x800, libc.MS_NODIRATIME), (0x1000, libc.MS_RELATIME))
# Options that only runc/crun understand and that carry no mount data.
_IGNORED = frozenset(("tmpcopyup", "copy-symlink", "notmpcopyup"))

DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))
DEV_SYMLINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                ("pts/ptmx", "ptmx"))


def parse_options(options: list[str], what: str) -> tuple[int, int, str]:
    """Mount options -> (flags, propagation flags, data)."""
    flags = 0
    prop = 0
    data = []
    for o in options:
        if o in _FLAGS:
            s, c = _FLAGS[o]
            flags = (flags | s) & ~c
        elif o in _PROPAGATION:
            prop |= _PROPAGATION[o]
        elif o in _IGNORED:
            pass
        elif o in ("idmap", "ridmap"):
            raise CoveError(what, f"mount option {o!r} is not supported yet")
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def secure_join(root: str, unsafe: str) -> str:
    """`root/unsafe` with every symlink resolved as if `root` were `/` (never above it)."""
    parts = unsafe.split("/")
    parts.reverse()
    resolved = ""
    links = 0
    while parts:
        p = parts.pop()
        if p in ("", "."):
            continue
        if p == "..":
            resolved = resolved.rsplit("/", 1)[0]
            continue
        cand = f"{resolved}/{p}"
        try:
            st = os.lstat(root + cand)
        except (FileNotFoundError, NotADirectoryError):
            resolved = cand
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise CoveError(unsafe, "too many levels of symbolic links")
            target = os.readlink(root + cand)
            if target.startswith("/"):
                resolved = ""
            more = target.split("/")
            more.reverse()
            parts.extend(more)
        else:
            resolved = cand
    return root + (resolved or "/")


def _open_in_root(rootfd: int, path_in_root: str) -> int:
    return libc.openat2(rootfd, path_in_root, os.O_PATH | os.O_CLOEXEC,
                     resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)


# Files under /proc that lxcfs emulates: the only mounts allowed inside /proc (as runc).
_PROC_MOUNTS_OK = frozenset((
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid", "/proc/sys/crypto/fips_enabled"))


def _norm(dest: str) -> str:
    return "/" + "/".join(p for p in dest.split("/") if p not in ("", "."))


def check_proc_mount(rootfs: str, m: Mount, typ: str, is_bind: bool, what: str,
                     source: str | None = None) -> None:
    """Refuse mounts that would cover /proc or a file in it (CVE-2019-16884,
    CVE-2019-19921, CVE-2023-27561): the runtime and the container's init write to
    /proc (sysctls, oom_score_adj, LSM labels), and a volume or tmpfs planted there,
    directly or through a symlink in the image, would redirect those writes or hide
    the masked files. proc and sysfs must land on an ordinary directory: never
    through a symlink of the image. `source`: where to reach a bind's source, when
    not by its path (a handle opened on the host's side: send_bind_sources)."""
    rel = secure_join(rootfs, m.destination)[len(rootfs):] or "/"
    if typ in ("proc", "sysfs") and rel != _norm(m.destination):
        raise CoveError(f"{what} ({typ} on {m.destination})",
                        f"filesystem {typ!r} must be mounted on an ordinary directory, "
                        f"and {m.destination} goes through a symlink")
    if rel == "/proc":
        if typ == "proc":
            return
        if is_bind:
            try:
                fd = os.open(source or m.source, os.O_PATH | os.O_CLOEXEC)
                try:
                    if (libc.fstatfs_type(fd) == libc.PROC_SUPER_MAGIC
                            and os.fstat(fd).st_ino == 1):
                        return  # a procfs root, bound (runc allows it too)
                finally:
                    os.close(fd)
            except OSError:
                pass
        raise CoveError(f"{what} ({typ or 'bind'} on {m.destination})",
                        "only a proc filesystem may be mounted on /proc")
    if rel.startswith("/proc/") and rel not in _PROC_MOUNTS_OK:
        raise CoveError(f"{what} ({typ or 'bind'} on {m.destination})",
                        f"{rel} is inside /proc: mounts there are not allowed")


def check_fd_at(fd: int, rootfs: str, rel: str, what: str) -> None:
    """The handle we are about to mount on is still the path we checked: an image's
    process racing us with a symlink swap (CVE-2021-30465) is caught here."""
    try:
        at = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return
    want = rootfs if rel == "/" else rootfs + rel
    if at != want:
        raise CoveError(what, f"mount target moved to {at} while being set up")


def _make_target(rootfs: str, dest: str, is_dir: bool) -> str:
    """Create the mount point inside rootfs; return its path relative to rootfs."""
    full = secure_join(rootfs, dest)
    rel = full[len(rootfs):] or "/"
    if is_dir:
        os.makedirs(full, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(full), 0o755, exist_ok=True)
        if not os.path.exists(full):
            os.close(os.open(full, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    return rel


def remount_ro(target: str, extra: int = 0) -> None:
    """Make an existing (bind) mount read-only, keeping the flags the kernel locked."""
    try:
        f = os.statvfs(target).f_flag
    except OSError:
        f = 0
    keep = 0
    for st_bit, ms in _LOCKED:
        if f & st_bit:
            keep |= ms
    libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | keep | extra)


def is_bind(m: Mount) -> bool:
    """Whether mounts[i] is a bind mount (as RootfsBuilder._mount decides it)."""
    if m.type in ("cgroup", "cgroup2"):
        return False
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def bind_sources(spec: Spec) -> list[tuple[int, str]]:
    """(index in `mounts`, absolute source) of every bind mount."""
    return [(i, os.path.abspath(m.source) if m.source else "")
            for i, m in enumerate(spec.mounts) if is_bind(m)]


class RootfsBuilder:
    """Sets up the rootfs of one container, before and after pivot_root."""

    def __init__(self, spec: Spec, rootfs: str, cgroup_mounts: list[tuple[str, str]],
                 userns: bool, cgroupns: bool) -> None:
        self.spec = spec
        self.rootfs = rootfs
        self.cgroup_mounts = cgroup_mounts
        self.userns = userns
        self.cgroupns = cgroupns
        self.rootfd = -1
        # mounts[i] -> a handle on its bind source opened on the host's side, or why
        # that failed (bindsources.recv_bind_sources); other bind sources are opened by path.
        self.sources: dict[int, int | OSError] = {}

    def prepare(self) -> None:
        """Everything before pivot_root: propagation, the rootfs bind, mounts, /dev."""
        prop = self.spec.linux.rootfs_propagation
        # Never let our mounts propagate back to the host: slave by default (as runc).
        base = _PROPAGATION.get(prop, 0) if prop in ("slave", "rslave", "private",
                                                      "rprivate", "shared", "rshared") else 0
        libc.mount(None, "/", None, base or (libc.MS_SLAVE | libc.MS_REC))
        if prop in ("shared", "rshared"):
            # Kept shared from the start (as runc): a bidirectional mount (Kubernetes)
            # stays in the host's peer group. The rootfs's own mount is made private so
            # that its bind below does not land on the host (runc's
            # rootfsParentMountPrivate), and pivot_root accepts it.
            from cove.runtime.bindsources import private_parent_mount
            private_parent_mount(self.rootfs)
        libc.mount(self.rootfs, self.rootfs, None, libc.MS_BIND | libc.MS_REC)
        self.rootfd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        dev_mounted = False
        try:
            for i, m in enumerate(self.spec.mounts):
                self._mount(m, f"mounts[{i}]", self.sources.pop(i, None))
                if m.destination.rstrip("/") == "/dev":
                    dev_mounted = True
        finally:
            for h in self.sources.values():
                if isinstance(h, int):
                    os.close(h)
            self.sources = {}
        self._devices(dev_mounted)

    def _mount(self, m: Mount, what: str, handle: int | OSError | None = None) -> None:
        flags, prop, data = parse_options(m.options, what)
        typ = m.type
        if typ == "cgroup" or typ == "cgroup2":
            self._mount_cgroup(m, flags, what)
            return
        is_bind = bool(flags & libc.MS_BIND) or typ == "bind"
        if typ == "bind":
            flags |= libc.MS_BIND
        is_dir = True
        src = m.source
        if is_bind:
            try:
                if isinstance(handle, OSError):
                    raise handle
                if handle is not None:
                    src = f"/proc/self/fd/{handle}"  # binds the mount the handle is on
                    is_dir = stat.S_ISDIR(os.fstat(handle).st_mode)
                else:
                    is_dir = stat.S_ISDIR(os.stat(src).st_mode)
            except OSError as e:
                if isinstance(handle, int):
                    os.close(handle)
                raise CoveError(f"{what} (bind {m.source} on {m.destination})",
                                e.strerror or str(e)) from None
        try:
            self._mount_at(m, what, typ, flags, prop, data, is_bind, is_dir, src)
        finally:
            if isinstance(handle, int):
                os.close(handle)

    def _mount_at(self, m: Mount, what: str, typ: str, flags: int, prop: int, data: str,
                  is_bind: bool, is_dir: bool, src: str) -> None:
        check_proc_mount(self.rootfs, m, typ, is_bind, what, src)
        rel = _make_target(self.rootfs, m.destination, is_dir)
        fd = _open_in_root(self.rootfd, rel)
        target = f"/proc/self/fd/{fd}"
        try:
            check_fd_at(fd, self.rootfs, rel, f"{what} ({typ or 'bind'} on {m.destination})")
            if is_bind:
                libc.mount(src, target, None, libc.MS_BIND | (flags & libc.MS_REC))
                # Bind ignores the other flags: they take effect on a remount. The old
                # handle names the covered directory, so reopen to reach the new mount.
                os.close(fd)
                fd = _open_in_root(self.rootfd, rel)
                target = f"/proc/self/fd/{fd}"
                rest = flags & ~(libc.MS_BIND | libc.MS_REC)
                if rest:
                    libc.mount(None, target, None, rest | libc.MS_BIND | libc.MS_REMOUNT)
            else:
                try:
                    libc.mount(m.source or typ, target, typ, flags, data or None)
                except OSError as e:
                    # sysfs can't be mounted without owning the net namespace: bind the
                    # host's read-only, as runc does.
                    if typ == "sysfs" and e.errno in (1, 13):
                        libc.mount("/sys", target, None, libc.MS_BIND | libc.MS_REC)
                        remount_ro(target,
                                   flags & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC))
                    elif typ == "mqueue" and e.errno in (1, 13):
                        libc.mount("/dev/mqueue", target, None, libc.MS_BIND)
                    else:
                        raise
                os.close(fd)
                fd = _open_in_root(self.rootfd, rel)
                target = f"/proc/self/fd/{fd}"
            if prop:
                libc.mount(None, target, None, prop)
        except OSError as e:
            raise CoveError(f"{what} ({typ or 'bind'} on {m.destination})",
                            e.strerror or str(e)) from None
        finally:
            os.close(fd)

    def _mount_cgroup(self, m: Mount, flags: int, what: str) -> None:
        rel = _make_target(self.rootfs, m.destination, True)
        fd = _open_in_root(self.rootfd, rel)
        target = f"/proc/self/fd/{fd}"
        ro = flags & libc.MS_RDONLY
        base = flags & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | libc.MS_RELATIME)
        try:
            # Bind mounts of the container's own cgroup directories, never a fresh
            # cgroup mount: init unshares its cgroup namespace only after this point.
            v2_only = len(self.cgroup_mounts) == 1 and self.cgroup_mounts[0][1] == ""
            if v2_only:
                libc.mount(self.cgroup_mounts[0][0], target, None, libc.MS_BIND | libc.MS_REC)
                if ro:
                    os.close(fd)
                    fd = _open_in_root(self.rootfd, rel)
                    remount_ro(f"/proc/self/fd/{fd}", base)
                return
            libc.mount("tmpfs", target, "tmpfs", base, "mode=755")
            os.close(fd)
            fd = _open_in_root(self.rootfd, rel)
            target = f"/proc/self/fd/{fd}"
            for src, sub in self.cgroup_mounts:
                if not os.path.isdir(src):
                    continue
                os.mkdir(os.path.join(target, sub), 0o755)
                sfd = _open_in_root(self.rootfd, f"{rel}/{sub}")
                try:
                    libc.mount(src, f"/proc/self/fd/{sfd}", None, libc.MS_BIND | libc.MS_REC)
                finally:
                    os.close(sfd)
                if ro:
                    sfd = _open_in_root(self.rootfd, f"{rel}/{sub}")
                    try:
                        remount_ro(f"/proc/self/fd/{sfd}", base)
                    finally:
                        os.close(sfd)
            # Combined hierarchies (cpu,cpuacct) are reached by their single names too.
            for _src, sub in self.cgroup_mounts:
                if "," in sub:
                    for part in sub.split(","):
                        link = os.path.join(target, part)
                        if not os.path.lexists(link):
                            os.symlink(sub, link)
            if ro:
                remount_ro(target, base)
        except OSError as e:
            raise CoveError(f"{what} (cgroup on {m.destination})", e.strerror or str(e)) from None
        finally:
            os.close(fd)

    def _devices(self, dev_mounted: bool) -> None:
        devdir = secure_join(self.rootfs, "/dev")
        os.makedirs(devdir, 0o755, exist_ok=True)
        devs: list[tuple[str, str, int, int, int, int | None, int | None]] = []
        if dev_mounted:
            devs = [(f"/dev/{n}", "c", ma, mi, 0o666, 0, 0) for n, ma, mi in DEFAULT_DEVICES]
        for d in self.spec.linux.devices:
            mode = d.file_mode if d.file_mode is not None else 0o666
            devs.append((d.path, d.type, d.major, d.minor, mode, d.uid, d.gid))
        for path, typ, major, minor, mode, uid, gid in devs:
            self._device(path, typ, major, minor, mode, uid, gid)
        if dev_mounted:
            for src, name in DEV_SYMLINKS:
                p = os.path.join(devdir, name)
                if not os.path.lexists(p):
                    os.symlink(src, p)
            if os.path.exists("/proc/kcore") and not os.path.lexists(f"{devdir}/core"):
                os.symlink("/proc/kcore", f"{devdir}/core")

    def _device(self, path: str, typ: str, major: int, minor: int, mode: int,
                uid: int | None, gid: int | None) -> None:
        full = secure_join(self.rootfs, path)
        os.makedirs(os.path.dirname(full), 0o755, exist_ok=True)
        what = f"device {path}"
        try:
            if self.userns:
                # mknod is refused in a user namespace: bind the host's node instead.
                if not os.path.exists(full):
                    os.close(os.open(full, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                fd = _open_in_root(self.rootfd, full[len(self.rootfs):])
                try:
                    libc.mount(path, f"/proc/self/fd/{fd}", None, libc.MS_BIND)
                finally:
                    os.close(fd)
                return
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                    "p": stat.S_IFIFO}[typ]
            if os.path.lexists(full):
                os.unlink(full)
            old = os.umask(0)
            try:
                os.mknod(full, kind | (mode & 0o7777), os.makedev(major, minor))
            finally:
                os.umask(old)
            os.chown(full, uid or 0, gid or 0, follow_symlinks=False)
        except OSError as e:
            raise CoveError(what, e.strerror or str(e)) from None

    def pivot(self, no_pivot: bool) -> None:
        os.close(self.rootfd)
        self.rootfd = -1
        os.chdir(self.rootfs)
        if no_pivot:
            libc.mount(self.rootfs, "/", None, libc.MS_MOVE)
            os.chroot(".")
        else:
            oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.pivot_root(".", ".")
                # The old root is now stacked on the new one; detach it without
                # propagating. From a handle on the old root, as runc: "." from the new
                # root's directory would make the new root's mounts slaves too, and cut
                # a bidirectional (rshared) mount off from the host's peer group.
                os.fchdir(oldroot)
            finally:
                os.close(oldroot)
            libc.mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC)
            libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
        prop = self.spec.linux.rootfs_propagation
        if prop in ("shared", "rshared", "unbindable", "runbindable"):
            libc.mount(None, "/", None, _PROPAGATION[prop])

    def finish(self) -> None:
        """After pivot_root: masked and read-only paths, then a read-only root."""
        lin = self.spec.linux
        for p in lin.readonly_paths:
            try:
                fd = open_in_container(p)
            except OSError as e:
                if e.errno == 2:
                    continue
                raise CoveError(f"readonlyPaths {p}", e.strerror or str(e)) from None
            try:
                t = fd_path(fd, p)
                libc.mount(t, t, None, libc.MS_BIND | libc.MS_REC)
                os.close(fd)
                fd = open_in_container(p)  # the new mount, not the one it covers
                remount_ro(fd_path(fd, p), libc.MS_REC)
            except OSError as e:
                if e.errno != 2:
                    raise CoveError(f"readonlyPaths {p}", e.strerror or str(e)) from None
            finally:
                os.close(fd)
        if lin.masked_paths:
            null_fd = _checked_dev_null()
            try:
                for p in lin.masked_paths:
                    mask_path(p, fd_path(null_fd, "/dev/null"))
            finally:
                os.close(null_fd)
        if self.spec.root is not None and self.spec.root.readonly:
            remount_ro("/")


def open_in_container(p: str) -> int:
    """An O_PATH handle on `p` (after pivot_root), the last component not followed and
    no /proc magic link on the way: what we mount on is what we looked at."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return libc.openat2(root, p, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                         resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)


def open_proc(rel: str, flags: int) -> int:
    """Open /proc/`rel` of the container's procfs, refusing anything else: /proc must be
    a procfs root and nothing may be mounted or linked on the way to the file
    (CVE-2019-16884, CVE-2025-52881: a planted /proc, or a procfs file bind-mounted
    over another such as /proc/sys/kernel/core_pattern, turned our writes into writes
    to the host's kernel settings)."""
    root = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if libc.fstatfs_type(root) != libc.PROC_SUPER_MAGIC or os.fstat(root).st_ino != 1:
            raise OSError(18, "/proc is not a procfs root")
        return libc.openat2(root, rel, flags | os.O_NOFOLLOW | os.O_CLOEXEC,
                         resolve=libc.RESOLVE_BENEATH | libc.RESOLVE_NO_XDEV
                         | libc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)


def fd_path(fd: int, fallback: str) -> str:
    """/proc/self/fd/N for mounting onto or from a handle; the plain path where the
    container has no /proc (and so nothing of the above to redirect)."""
    return f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else fallback


def _checked_dev_null() -> int:
    """A handle on /dev/null, verified to be the real 1:3 node (CVE-2025-31133: an
    image may plant a symlink or another file there to have it bind-mounted over a
    masked path; by handle, it cannot be swapped between check and mount)."""
    try:
        fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = -1
    st = os.fstat(fd) if fd >= 0 else None
    if st is None or not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        if fd >= 0:
            os.close(fd)
        raise CoveError("maskedPaths", "/dev/null in the container is not the null device")
    return fd


def mask_path(p: str, null: str) -> None:
    try:
        fd = open_in_container(p)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            # A symlink where a kernel file was expected: masking through it would
            # cover whatever it names instead. Nothing behind it is the kernel's.
            return
        t = fd_path(fd, p)
        if stat.S_ISDIR(st.st_mode):
            libc.mount("tmpfs", t, "tmpfs", libc.MS_RDONLY, "size=0k")
        else:
            libc.mount(null, t, None, libc.MS_BIND)
    except OSError as e:
        if e.errno != 2:
            raise CoveError(f"maskedPaths {p}", e.strerror or str(e)) from None
    finally:
        os.close(fd)
