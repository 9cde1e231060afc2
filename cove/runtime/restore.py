"""`restore`: bring a checkpointed container back with CRIU (runc's verb).

The bundle's config.json describes the container again (its mounts' sources may have
moved: they are handed to CRIU as the external mounts `checkpoint` named); its cgroup
is made and set as by `create`, and CRIU's service process is put in it before the
request, so the restored tree lands there. The rootfs is bind-mounted at
`<state>/criu-root` (CRIU wants its root to be a mount point whose parent is not
overmounted), mount points missing from it are made as `create` would make them, the
stdio pipes of the dumped init become ours (descriptors.json, CRIU's inherit-fd), and
a network or pid namespace the config joins by path is handed over as the external
one the image expects. CRIU's `post-restore` notification gives the new init's pid:
the state file is written then, so `state`, `kill`, `exec` and `delete` work on it.

The restored init is our child (CRIU's rst_sibling). In the foreground we wait for it,
pass its exit code on and delete the container, as `run` does; --detach leaves it to
whoever reaps our orphans. Any failure removes everything made: state, cgroup, mounts.
"""

from __future__ import annotations

import os
import time

from cove.errors import CoveError, os_why
from cove.runtime import state as runtime_state
from cove.runtime.checkpoint import DESCRIPTORS, EXT_NETNS, EXT_PIDNS, external_mounts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import Spec
    from cove.runtime.cgroups import Manager


class RestoreOptions:
    """runc's restore flags."""

    def __init__(self, root: str, cid: str, bundle: str = "") -> None:
        self.root = root
        self.id = cid
        self.bundle = bundle
        self.image_path = ""
        self.work_path = ""
        self.detach = False
        self.pid_file = ""
        self.console_socket = ""
        self.no_pivot = False
        self.tcp_established = False
        self.ext_unix_sk = False
        self.shell_job = False
        self.file_locks = False
        self.manage_cgroups_mode = ""
        self.empty_ns = ""
        self.auto_dedup = False
        self.lazy_pages = False
        self.rootless = False
        self.systemd_cgroup = False


def _mount_points(spec: Spec, rootfs: str) -> None:
    """Make the mount points the image's mounts need, not under a tmpfs (CRIU brings
    a tmpfs back with its contents), as `create` would have made them."""
    from cove.runtime.rootfs import is_bind, secure_join

    tmpfs = [m.destination.rstrip("/") + "/" for m in spec.mounts if m.type == "tmpfs"]
    for m in spec.mounts:
        if any(m.destination.startswith(t) for t in tmpfs):
            continue
        target = secure_join(rootfs, m.destination)
        if os.path.lexists(target):
            continue
        try:
            if is_bind(m) and m.source and not os.path.isdir(m.source):
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            else:
                os.makedirs(target, 0o755, exist_ok=True)
        except OSError as e:
            raise CoveError(f"mount point {m.destination}", os_why(e)) from None


def _inherit(image: str) -> list[tuple[str, int]]:
    """(key, our fd) for each stdio pipe or external file of the dumped init
    (checkpoint._stdio): ours take their place."""
    from cove.oci import jsonio

    try:
        with open(os.path.join(image, DESCRIPTORS), "rb") as f:
            fds = jsonio.loads(f.read())
    except FileNotFoundError:
        return []
    except (OSError, jsonio.JSONError) as e:
        raise CoveError(f"{image}/{DESCRIPTORS}", str(e)) from None
    if not isinstance(fds, list):
        raise CoveError(f"{image}/{DESCRIPTORS}", "expected a list")
    return [(s, i) for i, s in enumerate(fds)
            if isinstance(s, str) and (s.startswith("pipe:") or s.startswith("file["))]


def _cg_roots(pid: int) -> list[tuple[str, str]]:
    """cgroup v1: (controllers, path) of `pid` per hierarchy, CRIU's cgroup roots (v2:
    CRIU restores relative to its own cgroup, where it was put)."""
    out: list[tuple[str, str]] = []
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _n, ctrl, path = line.rstrip("\n").split(":", 2)
                if ctrl:
                    out.append((ctrl, path))
    except OSError:
        pass
    return out


def restore(o: RestoreOptions) -> int:
    from cove.runtime import criu
    from cove.runtime.caller import load_bundle, write_pid_file
    from cove.runtime.cgroups import open_manager
    from cove.runtime.create import cgroup_resources
    from cove.sys import libc

    runtime_state.check_id(o.id)
    if o.lazy_pages:
        raise CoveError("--lazy-pages", "not supported yet")
    image = os.path.abspath(o.image_path or "checkpoint")
    if not os.path.isfile(os.path.join(image, "inventory.img")):
        raise CoveError(f"--image-path {image}", "no checkpoint there (inventory.img is "
                        "missing)")
    bundle, raw, spec, rootfs = load_bundle(o.bundle)
    m = criu.rpc()
    os.makedirs(o.root, 0o700, exist_ok=True)
    sdir = os.path.join(o.root, o.id)
    try:
        os.mkdir(sdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {o.id!r}", "already exists") from None
    st = runtime_state.State(o.root, o.id, {
        "id": o.id, "pid": 0, "bundle": bundle, "rootfs": rootfs,
        "created": runtime_state.rfc3339(time.time_ns()),
        "owner": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "annotations": spec.annotations, "rootless": o.rootless, "restored": True,
        "creating": True})
    mgr: Manager | None = None
    criu_root = os.path.join(sdir, "criu-root")
    mounted = False
    fds: list[int] = []
    console = None
    swrk = None
    try:
        with open(os.path.join(sdir, "config.json"), "wb") as f:
            f.write(raw)
        mgr = open_manager(spec.linux.cgroups_path or None, o.id, rootless=o.rootless,
                           systemd=o.systemd_cgroup)
        mgr.create()
        st.data["cgroup"] = mgr.to_state()
        mgr.set(cgroup_resources(spec))
        st.save()
        _mount_points(spec, rootfs)
        os.mkdir(criu_root, 0o755)
        libc.mount(rootfs, criu_root, None, libc.MS_BIND | libc.MS_REC)
        mounted = True
        img_fd = os.open(image, os.O_DIRECTORY | os.O_RDONLY)
        fds.append(img_fd)
        work = os.path.abspath(o.work_path) if o.work_path else image
        if work != image:
            os.makedirs(work, 0o700, exist_ok=True)
            fds.append(os.open(work, os.O_DIRECTORY | os.O_RDONLY))
        work_fd = fds[-1]
        req = m.criu_req()
        req.type = m.RESTORE
        opts = req.opts
        opts.images_dir_fd = img_fd
        opts.work_dir_fd = work_fd
        opts.evasive_devices = True
        opts.log_level = 4
        opts.log_file = "restore.log"
        opts.rst_sibling = True
        opts.root = criu_root
        opts.manage_cgroups = True
        opts.notify_scripts = True
        opts.shell_job = o.shell_job
        opts.ext_unix_sk = o.ext_unix_sk
        opts.tcp_established = o.tcp_established
        opts.file_locks = o.file_locks
        opts.orphan_pts_master = True
        opts.auto_dedup = o.auto_dedup
        if o.empty_ns:
            opts.empty_ns = criu.empty_ns_flag(o.empty_ns)
        if o.manage_cgroups_mode:
            opts.manage_cgroups_mode = criu.cg_mode(o.manage_cgroups_mode)
        for kind, key in (("network", EXT_NETNS), ("pid", EXT_PIDNS)):
            ns = spec.linux.ns(kind)
            if ns is not None and ns.path:
                try:
                    nfd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise CoveError(f"linux.namespaces {kind} {ns.path}", os_why(e)) from None
                fds.append(nfd)
                inh = opts.inherit_fd.add()
                inh.key, inh.fd = key, nfd
        for key, val in external_mounts(spec, mgr, restoring=True):
            ext = opts.ext_mnt.add()
            ext.key, ext.val = key, val
        for key, fd in _inherit(image):
            inh = opts.inherit_fd.add()
            inh.key, inh.fd = key, fd
        if o.console_socket:
            from cove.runtime.caller import connect_console

            console = connect_console(o.console_socket)
            fds.append(console)

        def notify(script: str, pid: int, got: list[int]) -> None:
            if script == "post-restore":
                st.data["pid"] = pid
                st.data["init_start"] = runtime_state.proc_start_time(pid)
                st.save()
            elif script == "orphan-pts-master" and console is not None and got:
                import socket

                s = socket.socket(fileno=os.dup(console))
                try:
                    socket.send_fds(s, [b"/dev/ptmx"], [got[0]])
                finally:
                    s.close()

        swrk = criu.Swrk(extra_fds=fds)
        mgr.apply(swrk.pid)  # CRIU restores the tree into the cgroup it runs in
        if any(h.version == 1 for h in mgr.hierarchies):
            for ctrl, path in _cg_roots(swrk.pid):
                cg = opts.cg_root.add()
                cg.ctrl, cg.path = ctrl, path
        resp = swrk.call(req, notify)
        swrk.close()
        swrk = None
        if not resp.success:
            raise criu.failure("restore", resp, os.path.join(work, "restore.log"))
        pid = int(resp.restore.pid) if resp.HasField("restore") else st.pid
        if pid != st.pid:
            st.data["pid"] = pid
            st.data["init_start"] = runtime_state.proc_start_time(pid)
        st.data.pop("creating", None)
        st.save()
        if o.pid_file:
            write_pid_file(o.pid_file, pid)
    except BaseException:
        if swrk is not None:
            swrk.proc.kill()
            swrk.close()
        _unmount(criu_root, mounted)
        mounted = False  # before _undo removes the state directory: not the rootfs
        _undo(st, mgr)
        raise
    finally:
        _unmount(criu_root, mounted)
        for fd in fds:
            os.close(fd)
    if o.detach:
        return 0
    from cove.runtime.caller import wait_forwarding
    from cove.runtime.delete import delete

    try:
        return wait_forwarding(st.pid)
    finally:
        delete(o.root, o.id, force=True)


def _unmount(criu_root: str, mounted: bool) -> None:
    from cove.sys import libc

    if mounted:
        try:
            libc.umount2(criu_root, libc.MNT_DETACH)
        except OSError:
            pass
    try:
        os.rmdir(criu_root)
    except OSError:
        pass


def _undo(st: runtime_state.State, mgr: Manager | None) -> None:
    """A failed restore leaves nothing: the restored tree (if CRIU got that far), the
    cgroup, the state directory."""
    if mgr is not None:
        try:
            mgr.kill_all(9)
        except (OSError, CoveError):
            pass
    if st.pid > 0:
        try:
            os.kill(st.pid, 9)
            os.waitpid(st.pid, 0)
        except OSError:
            pass
    if mgr is not None:
        try:
            mgr.destroy()
        except (OSError, CoveError):
            pass
    runtime_state.remove_dir(st.dir)
