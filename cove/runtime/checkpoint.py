"""`checkpoint`: write a running container's process tree out with CRIU (runc's verb).

The container's mounts are described to CRIU as runc does: every bind mount, the
cgroup directories bound at /sys/fs/cgroup, the /dev/null binds over masked files and
bind-mounted device nodes are *external* (keyed by their place in the container, the
host side supplied again at restore), the rest (the root, tmpfs, proc, sysfs, devpts,
mqueue) CRIU dumps or re-creates itself. A network or pid namespace the container
joined by path is external too (`net[INODE]:extRootNetNS`): restore expects it to
exist. The stdio descriptors are written to `descriptors.json` in the image, so that
restore hands the new caller's in their place (CRIU's inherit-fd): pipes as runc does,
and files opened outside the container's mounts (the engine's output FIFOs, the host's
/dev/null) declared external (`file[MNT:INODE]`), which runc leaves CRIU to fail on.

Without --leave-running CRIU kills the tree once it is written, and the container is
deleted (its cgroup and state go), as runc's checkpoint does. A failure leaves it
running and unchanged: CRIU thaws what it froze.
"""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.runtime import state as runtime_state
from cove.runtime.criu import Flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import Spec
    from cove.runtime.cgroups import Manager

DESCRIPTORS = "descriptors.json"
EXT_NETNS = "extRootNetNS"
EXT_PIDNS = "extRootPidNS"


class CheckpointOptions(Flags):
    """runc's checkpoint flags (the ones restore shares are criu.Flags')."""

    def __init__(self, image_path: str = "", work_path: str = "") -> None:
        super().__init__(image_path, work_path)
        self.leave_running = False
        self.pre_dump = False
        self.parent_path = ""


def joined_namespaces(spec: Spec) -> list[tuple[str, str, str]]:
    """(CRIU's kind, external key, path) of each network or pid namespace the config
    joins by path: external to the image (`checkpoint` names it by inode, `restore`
    hands it over as an inherited fd)."""
    out = []
    for kind, key in (("network", EXT_NETNS), ("pid", EXT_PIDNS)):
        ns = spec.linux.ns(kind)
        if ns is not None and ns.path:
            out.append(("net" if kind == "network" else "pid", key, ns.path))
    return out


def external_mounts(spec: Spec, mgr: Manager | None, pid: int = 0,
                    restoring: bool = False) -> list[tuple[str, str]]:
    """(key, value) ext-mount pairs: at dump (key: the place in the container, value:
    the name it is known by in the image), or at restore (key: that name, value: the
    host's source now)."""
    from cove.runtime.rootfs import is_bind

    out: list[tuple[str, str]] = []
    for m in spec.mounts:
        if m.type in ("cgroup", "cgroup2"):
            if mgr is None:
                continue
            for src, sub in mgr.mounts():
                dest = m.destination.rstrip("/") + (f"/{sub}" if sub else "")
                out.append((dest, src if restoring else dest))
        elif is_bind(m):
            src = os.path.abspath(m.source) if m.source else ""
            out.append((m.destination, src if restoring else m.destination))
    if restoring:
        if spec.linux.masked_paths:
            out.append(("/dev/null", "/dev/null"))
    else:
        for p in spec.linux.masked_paths:
            try:
                if pid and os.path.isdir(f"/proc/{pid}/root{p}"):
                    continue  # a read-only tmpfs: CRIU dumps it
            except OSError:
                continue
            out.append((p, "/dev/null"))
    for d in spec.linux.devices:
        out.append((d.path, d.path))
    return out


def _freeze_dir(mgr: Manager | None) -> str:
    """The cgroup CRIU freezes the tree with (v1 freezer or the v2 directory): faster
    and safer than its ptrace-based stop."""
    if mgr is None:
        return ""
    fz = mgr._freezer()
    return fz[0] if fz is not None else ""


def _open_dir(path: str, what: str, create: bool) -> int:
    try:
        if create:
            os.makedirs(path, 0o700, exist_ok=True)
        return os.open(path, os.O_DIRECTORY | os.O_RDONLY)
    except OSError as e:
        raise CoveError(f"{what} {path}", os_why(e)) from None


def checkpoint(root: str, cid: str, o: CheckpointOptions) -> None:
    """Dump (or pre-dump) container `cid` into o.image_path; see the module's doc."""
    st = runtime_state.load(root, cid)
    status = st.status()
    if status not in ("running", "paused"):
        raise CoveError(f"container {cid!r}", f"cannot checkpoint a container that is "
                        f"{status} (it must be running)")
    if o.lazy_pages:
        raise CoveError("--lazy-pages", "not supported yet (needs CRIU's lazy-pages "
                        "daemon and a page server)")
    image = os.path.abspath(o.image_path or "checkpoint")
    if os.path.isdir(image) and any(n.endswith(".img") for n in os.listdir(image)):
        raise CoveError(f"--image-path {image}", "not empty: a checkpoint would mix with "
                        "what is there")
    img_fd = _open_dir(image, "--image-path", True)
    work = os.path.abspath(o.work_path) if o.work_path else image
    work_fd = _open_dir(work, "--work-path", True) if work != image else img_fd
    try:
        _dump(st, o, image, img_fd, work, work_fd)
    finally:
        for fd in {img_fd, work_fd}:
            os.close(fd)
    if not o.pre_dump and not o.leave_running:
        from cove.runtime.delete import delete

        try:
            delete(root, cid, force=True)
        except CoveError:
            # whoever reaped the init (an engine's monitor) may have deleted it first
            if os.path.exists(os.path.join(root, cid, "state.json")):
                raise


def _dump(st: runtime_state.State, o: CheckpointOptions, image: str, img_fd: int,
          work: str, work_fd: int) -> None:
    """The DUMP (or PRE_DUMP) request and its answer; a failure leaves no
    descriptors.json behind (the tree runs on: CRIU thaws it)."""
    from cove.oci.spec import Spec
    from cove.runtime import criu

    spec = Spec.parse(st.config_bytes())
    mgr: Manager | None = None
    if st.data.get("cgroup"):
        from cove.runtime.cgroups import open_manager_from_state

        mgr = open_manager_from_state(st.data["cgroup"])
    log = "pre-dump.log" if o.pre_dump else "dump.log"
    req = criu.request("PRE_DUMP" if o.pre_dump else "DUMP", o, img_fd, work_fd, log)
    opts = req.opts
    opts.root = st.data.get("rootfs") or spec.root.path  # type: ignore[union-attr]
    opts.pid = st.pid
    opts.leave_running = o.leave_running or o.pre_dump
    fz = _freeze_dir(mgr)
    if fz:
        opts.freeze_cgroup = fz
    if o.parent_path:
        opts.parent_img = o.parent_path
    opts.track_mem = bool(o.parent_path or o.pre_dump)
    for flavor, key, path in joined_namespaces(spec):
        try:
            ino = os.stat(path).st_ino
        except OSError as e:
            raise CoveError(f"linux.namespaces {flavor} {path}", os_why(e)) from None
        opts.external.append(f"{flavor}[{ino}]:{key}")
    if not o.pre_dump:
        for key, val in external_mounts(spec, mgr, st.pid):
            ext = opts.ext_mnt.add()
            ext.key, ext.val = key, val
        keys, ext_files = _stdio(st.pid)
        opts.external.extend(ext_files)
        _write_descriptors(image, keys)
    s = criu.Swrk(extra_fds=sorted({img_fd, work_fd}))
    try:
        resp = s.call(req)
    finally:
        s.close()
    if not resp.success:
        if not o.pre_dump:
            try:
                os.unlink(os.path.join(image, DESCRIPTORS))
            except OSError:
                pass
        raise criu.failure("pre-dump" if o.pre_dump else "dump", resp,
                           os.path.join(work, log))


def _mount_ids(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return {int(line.split(None, 1)[0]) for line in f if line.strip()}
    except (OSError, ValueError):
        return set()


def _stdio(pid: int) -> tuple[list[str], list[str]]:
    """What init's fds 0-2 are, as restore's inherit-fd keys: `pipe:[INODE]` for a pipe
    (runc's descriptors.json), `file[MNT:INODE]` (hex, CRIU's external-file id) for a
    file opened outside the container's mounts (the engine's FIFOs, the host's
    /dev/null), which CRIU cannot dump unless told it is external; else the path.
    Returns (the keys, the externals to declare)."""
    mounts = _mount_ids(pid)
    keys: list[str] = []
    ext: list[str] = []
    for i in range(3):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{i}")
        except OSError:
            keys.append("/dev/null")
            continue
        if link.startswith("pipe:") or link.startswith(("socket:", "anon_inode:")):
            keys.append(link)
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{i}") as f:
                info = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
            mnt = int(info["mnt_id"].strip())
            ino = os.stat(f"/proc/{pid}/fd/{i}").st_ino
        except (OSError, KeyError, ValueError):
            keys.append(link)
            continue
        if mnt in mounts:
            keys.append(link)
            continue
        key = f"file[{mnt:x}:{ino:x}]"
        keys.append(key)
        if key not in ext:
            ext.append(key)
    return keys, ext


def _write_descriptors(image: str, keys: list[str]) -> None:
    from cove.oci import jsonio

    with open(os.path.join(image, DESCRIPTORS), "w") as f:
        f.write(jsonio.dumps(keys))
