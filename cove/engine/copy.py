"""`cove cp` (both directions) and `cove export`: files between a container's root
filesystem and the host, or a tar stream, with docker's rules.

Where the files are: a running container's own view, `/proc/PID/root`, so that what its
processes see is what is copied (its volumes and tmpfs mounts too, as docker's cp);
otherwise its rootfs, `merged`. A stopped container's overlay is not mounted: the copy
then runs in a child process with a mount namespace of its own, which mounts it there
(snapshots.remount) and takes the mount with it when it exits, whatever happens. All
the work runs in such a child (a fork); it reports a failure as one line.

Nothing is followed out of the container's root: every path in it is resolved with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) against the root's fd (an absolute
symlink or `..` stays inside, as if the container had resolved it), and every entry
below is opened with O_NOFOLLOW relative to its directory's fd, so a process in the
container that swaps a directory for a symlink meanwhile changes nothing outside. A tar
unpacked into the container (or onto the host) is resolved the same way, scoped to the
destination directory; names with `..` are refused.

docker's rules (`docker cp --help`): a file goes into an existing directory, or
becomes (or replaces) DEST; a directory becomes DEST when DEST does not exist, else goes
into it, or with SRC ending in `/.` its contents do; a directory onto a file is an
error, and so is a file onto `DIR/` that does not exist. `-` is a tar stream (stdout,
or stdin unpacked into a directory). Files copied in are owned by root, files copied
out by the caller, unless `-a` keeps the source's owners; `-L` follows a symlink that
SRC names.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tarfile
import threading
from collections.abc import Callable
from typing import IO

from cove.engine import containers, events, state
from cove.errors import CoveError, os_why
from cove.image.layerwrite import LayerWriter, kept_xattr
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record

RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
Owner = tuple[int, int] | None  # None: the archive's owners


def split_arg(arg: str) -> tuple[str | None, str]:
    """docker's `CONTAINER:PATH` or a local path: a path that starts with / or . is
    local (a local name with a colon is written ./a:b)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    ctr, _, path = arg.partition(":")
    return ctr, path


# -- running the work in a child ---------------------------------------------------------

def in_child(fn: Callable[[], None]) -> None:
    """Run `fn` in a forked child (its own mount namespace, if it makes one, dies with
    it) and raise its failure here as one line."""
    r, w = os.pipe()
    for f in (sys.stdout, sys.stderr):
        f.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.umask(0)  # modes as the archive has them
            fn()
        except BrokenPipeError:
            os.write(w, b'{"pipe": true}')
            code = 141
        except CoveError as e:
            os.write(w, json.dumps({"what": e.what, "why": e.why}).encode())
            code = 1
        except OSError as e:
            os.write(w, json.dumps({"what": "", "why": os_why(e)}).encode())
            code = 1
        except BaseException as e:
            os.write(w, json.dumps({"what": "", "why": str(e) or type(e).__name__}).encode())
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if data:
        msg = json.loads(data)
        if msg.get("pipe"):
            raise BrokenPipeError
        raise CoveError(msg["what"] or "cp", msg["why"])


def container_root(paths: state.Paths, name: str, rec: Record, view: bool) -> int:
    """An O_PATH fd of the container's root: with `view`, what its processes see while
    it runs; else (and when stopped) its rootfs, mounted in this process's own mount
    namespace when it is not mounted (call in a child: see in_child)."""
    st = rec["State"]
    pid = int(st.get("Pid") or 0)
    if view and st["Status"] in ("running", "paused") and state.pid_alive(pid, st.get("PidStart")):
        return os.open(f"/proc/{pid}/root", O_DIR)
    cdir = paths.cdir(name)
    merged = os.path.join(cdir, "merged")
    from cove.image import snapshots
    if not snapshots.is_mounted(merged):
        with open(os.path.join(cdir, "rootfs.json")) as f:
            overlay = json.load(f).get("mode") == "overlay"
        if overlay:
            from cove.image.store import Store
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            snapshots.remount(Store(paths.root), name)
    return os.open(merged, O_DIR)


# -- locating paths ---------------------------------------------------------------------

def _open_dir(base: int, path: str, resolve: int) -> int:
    return libc.openat2(base, path or ".", O_DIR, 0, resolve)


def locate(rootfd: int, path: str, follow: bool) -> tuple[int, str, os.stat_result | None]:
    """(fd of the parent directory, name, lstat or None when absent) of `path` inside
    the root `rootfd`; with `follow`, a symlink it names is followed (inside the root).
    A missing parent is ENOENT."""
    cur = "/" + path.lstrip("/")
    for _ in range(40):
        trimmed = cur.rstrip("/")
        parent, base = os.path.split(trimmed)
        if not trimmed or base in (".", ".."):  # a directory itself: "/", "d/."
            fd = _open_dir(rootfd, trimmed or "/", RESOLVE)
            return fd, ".", os.fstat(fd)
        pfd = _open_dir(rootfd, parent, RESOLVE)
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return pfd, base, None
        if follow and stat.S_ISLNK(st.st_mode):
            target = os.readlink(base, dir_fd=pfd)
            os.close(pfd)
            cur = target if target.startswith("/") else f"{parent}/{target}"
            continue
        return pfd, base, st
    raise OSError(40, "too many levels of symbolic links", path)


def host_locate(path: str, follow: bool) -> tuple[int, str, os.stat_result | None]:
    """locate() for a host path (the user's own: resolved as the host resolves it)."""
    full = os.path.realpath(path) if follow else os.path.abspath(path)
    if full == "/" or path.rstrip("/").endswith(("/.", "/..")) or path in (".", ".."):
        full = os.path.realpath(path)
        return os.open(full, O_DIR), ".", os.stat(full)
    pfd = os.open(os.path.dirname(full), O_DIR)
    try:
        return pfd, os.path.basename(full), os.stat(os.path.basename(full), dir_fd=pfd,
                                                     follow_symlinks=False)
    except FileNotFoundError:
        return pfd, os.path.basename(full), None


# -- tar: pack --------------------------------------------------------------------------

def pack(tf: tarfile.TarFile, pfd: int, name: str, arc: str, *, contents: bool = False,
         writer: LayerWriter | None = None,
         skip: Callable[[str, os.stat_result], bool] | None = None) -> None:
    """Add `name` (in directory `pfd`; never followed) as `arc`, recursively, through
    the image layer's writer (owners, modes, links, devices, file capabilities as an
    image layer keeps them); with `contents`, only what a directory holds (arc the
    prefix, "" for none)."""
    w = LayerWriter(tf) if writer is None else writer
    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    if skip is not None and skip(arc, st):
        return
    if not stat.S_ISDIR(st.st_mode):
        w.add(arc, st, name, pfd)
        return
    if not contents:
        w.add(arc, st, name, pfd)
    dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                  dir_fd=pfd)
    try:
        for child in sorted(os.listdir(dfd)):
            pack(tf, dfd, child, f"{arc}/{child}" if arc else child, writer=w, skip=skip)
    finally:
        os.close(dfd)


# -- tar: unpack ------------------------------------------------------------------------

def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CoveError(f"archive entry {name!r}", "refusing a path with '..'")
    return "/".join(parts)


def _parent(dest: int, rel: str) -> int:
    """The directory `rel` under `dest` (made, 0755, where missing), resolved inside
    `dest`."""
    try:
        return _open_dir(dest, rel, RESOLVE)
    except FileNotFoundError:
        pass
    cur = os.dup(dest)
    try:
        for comp in rel.split("/"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(comp, 0o755, dir_fd=cur)
            nxt = _open_dir(cur, comp, RESOLVE)
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def _set_xattrs(fd: int, m: tarfile.TarInfo) -> None:
    """The xattrs an archive carries that a layer keeps (file capabilities, user.*),
    as docker's cp restores them; where the filesystem takes them."""
    for k, v in m.pax_headers.items():
        name = k.removeprefix("SCHILY.xattr.")
        if name != k and kept_xattr(name):
            with contextlib.suppress(OSError):
                os.setxattr(fd, name, v.encode("utf-8", "surrogateescape"))


def unpack(tf: tarfile.TarFile, dest: int, *, rename: tuple[str, str] | None = None,
           owner: Owner = None, where: str = "") -> None:
    """Extract `tf` under the directory `dest` (resolved inside it); `rename` maps the
    first component; `owner` replaces the archive's owners."""
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    for m in tf:
        rel = _clean(m.name)
        if rename and (rel == rename[0] or rel.startswith(rename[0] + "/")):
            rel = rename[1] + rel[len(rename[0]):]
        if not rel:
            continue
        parent, _, base = rel.rpartition("/")
        uid, gid = owner if owner is not None else (m.uid, m.gid)
        pfd = _parent(dest, parent)
        try:
            try:
                ex: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                ex = None
            if ex is not None and stat.S_ISDIR(ex.st_mode) != m.isdir():
                shown = f"{where.rstrip('/')}/{rel}"
                raise CoveError(f"cp {shown}", "cannot overwrite directory with a "
                                "non-directory" if not m.isdir() else
                                "cannot overwrite non-directory with a directory")
            if ex is not None and not m.isdir():
                os.unlink(base, dir_fd=pfd)
            if m.isdir():
                if ex is None:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                dirs.append((rel, m))
            elif m.isreg():
                fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600, dir_fd=pfd)
                try:
                    src = tf.extractfile(m)
                    while src is not None and (chunk := src.read(1 << 20)):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, m.mode & 0o7777)
                    _set_xattrs(fd, m)   # after the chown, which clears capabilities
                    os.utime(fd, (m.mtime, m.mtime))
                finally:
                    os.close(fd)
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=pfd)
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
            elif m.islnk():
                trel = _clean(m.linkname)
                if rename and (trel == rename[0] or trel.startswith(rename[0] + "/")):
                    trel = rename[1] + trel[len(rename[0]):]
                tparent, _, tbase = trel.rpartition("/")
                tfd = _open_dir(dest, tparent, RESOLVE)
                try:
                    os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd,
                            follow_symlinks=False)
                finally:
                    os.close(tfd)
            elif m.ischr() or m.isblk() or m.isfifo():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() \
                    else stat.S_IFIFO
                os.mknod(base, kind | (m.mode & 0o777), os.makedev(m.devmajor, m.devminor),
                         dir_fd=pfd)  # (umask 0: the mode as given; never followed)
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)
    for rel, m in reversed(dirs):  # modes and times last: children change mtimes
        fd = libc.openat2(dest, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                          os.O_CLOEXEC, 0, RESOLVE)
        try:
            uid, gid = owner if owner is not None else (m.uid, m.gid)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, m.mode & 0o7777)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)


def _through_pipe(produce: Callable[[IO[bytes]], None], consume: Callable[[IO[bytes]], None]
                  ) -> None:
    """`produce` writes a tar that `consume` reads, through a pipe (nothing staged)."""
    r, w = os.pipe()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(w, "wb") as f:
                produce(f)
        except BaseException as e:  # re-raised below
            failed.append(e)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        with os.fdopen(r, "rb") as f:
            consume(f)
    finally:
        t.join()
    if failed and not isinstance(failed[0], BrokenPipeError):
        raise failed[0]


# -- cp ---------------------------------------------------------------------------------

def _plan(src_dir: bool, base: str, contents: bool, dest: str,
          dest_st: os.stat_result | None, dest_name: str) -> tuple[bool, str, bool]:
    """docker's rules: (unpack into DEST itself rather than its parent, the name the
    source is archived as, whether only a directory's contents are)."""
    if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
        return True, "" if contents else base, contents
    if dest_st is not None and src_dir:
        raise CoveError(f"cp {dest}", "cannot copy a directory to a file")
    if dest_st is None and dest.endswith("/") and not src_dir:
        raise CoveError(f"cp {dest}", "the destination directory does not exist")
    return False, dest_name, False


def _src_base(path: str) -> tuple[str, bool]:
    """(the name SRC is archived as, whether only its contents are: `DIR/.`, `/`)."""
    p = path.rstrip("/")
    contents = p in ("", ".") or p.endswith("/.")
    base = os.path.basename(p[:-2].rstrip("/") if p.endswith("/.") else p)
    return base, contents or not base


def copy(root: str, src: str, dest: str, *, archive: bool = False, follow: bool = False,
         stdin: int = 0, stdout: int = 1) -> None:
    """`cove cp SRC DEST`, one of them `CONTAINER:PATH`."""
    sctr, spath = split_arg(src)
    dctr, dpath = split_arg(dest)
    if sctr is None and dctr is None:
        raise CoveError(f"cp {src} {dest}", "must specify at least one container source")
    if sctr is not None and dctr is not None:
        raise CoveError(f"cp {src} {dest}", "copying between containers is not supported")
    if (sctr is not None and not spath) or (dctr is not None and not dpath):
        raise CoveError(f"cp {src} {dest}", "a container path must not be empty")
    paths = state.Paths(root)
    name = state.lookup(paths, str(sctr if sctr is not None else dctr))
    rec = containers.refresh_record(paths, name)
    if sctr is not None:
        in_child(lambda: _copy_out(paths, name, rec, spath, dpath, archive, follow, stdout,
                                   src))
        events.emit(root, "container", "archive-path", rec, path=spath)
    else:
        in_child(lambda: _copy_in(paths, name, rec, spath, dpath, archive, follow, stdin,
                                  dest))
        events.emit(root, "container", "extract-to-dir", rec, path=dpath)


def _transfer(pfd: int, sname: str, is_dir: bool, base: str, contents: bool, dest: str,
              dpfd: int, dname: str, dst: os.stat_result | None, owner: Owner) -> None:
    """Copy `sname` (in `pfd`) to the destination `dname` (in `dpfd`) as docker would."""
    into, arc, only = _plan(is_dir, base, contents and is_dir, dest, dst, dname)
    target = libc.openat2(dpfd, dname, O_DIR, 0, RESOLVE) if into else dpfd

    def produce(f: IO[bytes]) -> None:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            pack(tf, pfd, sname, arc, contents=only)

    def consume(f: IO[bytes]) -> None:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            unpack(tf, target, owner=owner, where=dest)
    _through_pipe(produce, consume)


def _copy_out(paths: state.Paths, name: str, rec: Record, spath: str, dest: str,
              archive: bool, follow: bool, stdout: int, shown: str) -> None:
    rootfd = container_root(paths, name, rec, view=True)
    pfd, sname, st = -1, "", None
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        pfd, sname, st = locate(rootfd, spath, follow)
    if st is None:
        raise CoveError(f"cp {shown}", f"could not find the file {spath} in container "
                                       f"{name}")
    base, contents = _src_base(spath)
    is_dir = stat.S_ISDIR(st.st_mode)
    if dest == "-":
        with os.fdopen(os.dup(stdout), "wb") as out, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            only = contents and is_dir
            pack(tf, pfd, sname, "" if only else base, contents=only)
        return
    try:
        dpfd, dname, dst = host_locate(dest, follow=True)
    except (FileNotFoundError, NotADirectoryError):
        raise CoveError(f"cp {dest}", f"the directory {os.path.dirname(dest) or '.'} does "
                                      "not exist") from None
    _transfer(pfd, sname, is_dir, base, contents, dest, dpfd, dname, dst,
              None if archive else (os.getuid(), os.getgid()))


def _copy_in(paths: state.Paths, name: str, rec: Record, src: str, dpath: str,
             archive: bool, follow: bool, stdin: int, shown: str) -> None:
    try:
        _copy_in_(paths, name, rec, src, dpath, archive, follow, stdin, shown)
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
        # (--read-only, or a :ro volume; as docker, a writable volume takes the copy)
        raise CoveError(f"cp {shown}", "the destination is on a read-only file "
                        "system (the container's rootfs or volume)") from None


def _copy_in_(paths: state.Paths, name: str, rec: Record, src: str, dpath: str,
              archive: bool, follow: bool, stdin: int, shown: str) -> None:
    pfd, sname, st = -1, "", None
    if src != "-":
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            pfd, sname, st = host_locate(src, follow)
        if st is None:
            raise CoveError(f"cp {src}", "no such file or directory")
    rootfd = container_root(paths, name, rec, view=True)
    try:
        dpfd, dname, dst = locate(rootfd, dpath, follow=True)
    except (FileNotFoundError, NotADirectoryError):
        raise CoveError(f"cp {shown}", f"the directory {os.path.dirname(dpath) or '/'} "
                                       f"does not exist in container {name}") from None
    owner: Owner = None if archive else (0, 0)
    if st is None:  # `-`: a tar on stdin, unpacked into a directory
        if dst is None or not stat.S_ISDIR(dst.st_mode):
            raise CoveError(f"cp - {shown}", "the destination must be a directory")
        target = libc.openat2(dpfd, dname, O_DIR, 0, RESOLVE)
        with os.fdopen(os.dup(stdin), "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            unpack(tf, target, owner=owner, where=dpath)
        return
    base, contents = _src_base(src)
    _transfer(pfd, sname, stat.S_ISDIR(st.st_mode), base, contents, shown, dpfd, dname,
              dst, owner)


# -- export -----------------------------------------------------------------------------

def export(root: str, ref: str, out: int = 1) -> None:
    """The container's root filesystem as a tar on `out` (docker export: its rootfs,
    not its volumes or the mounts it runs with)."""
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    rec = containers.refresh_record(paths, name)

    def work() -> None:
        rootfd = container_root(paths, name, rec, view=False)
        with os.fdopen(os.dup(out), "wb") as f, \
                tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            pack(tf, rootfd, ".", "", contents=True)
    in_child(work)
    events.emit(root, "container", "export", rec)
