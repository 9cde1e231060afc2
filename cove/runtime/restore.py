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
from cove.runtime.checkpoint import DESCRIPTORS, external_mounts, joined_namespaces
from cove.runtime.criu import Flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.oci.spec import Spec
    from cove.runtime.cgroups import Manager


class RestoreOptions(Flags):
    """runc's restore flags (the ones checkpoint shares are criu.Flags')."""

    def __init__(self, root: str, cid: str, bundle: str = "") -> None:
        super().__init__()
        self.root = root
        self.id = cid
        self.bundle = bundle
        self.detach = False
        self.pid_file = ""
        self.console_socket = ""
        self.no_pivot = False
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
    """Restore container o.id from o.image_path; see the module's doc. Detached: 0 once
    it runs; else the restored init's exit code."""
    from cove.runtime.caller import load_bundle

    runtime_state.check_id(o.id)
    if o.lazy_pages:
        raise CoveError("--lazy-pages", "not supported yet")
    image = os.path.abspath(o.image_path or "checkpoint")
    if not os.path.isfile(os.path.join(image, "inventory.img")):
        raise CoveError(f"--image-path {image}", "no checkpoint there (inventory.img is "
                        "missing)")
    bundle, raw, spec, rootfs = load_bundle(o.bundle)
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
    r = _Restoring(o, st, spec, rootfs, image)
    try:
        r.run(raw)
    except BaseException:
        r.undo()
        raise
    finally:
        r.close()
    if o.detach:
        return 0
    from cove.runtime.caller import wait_forwarding
    from cove.runtime.delete import delete

    try:
        return wait_forwarding(st.pid)
    finally:
        delete(o.root, o.id, force=True)


class _Restoring:
    """One restore's steps and what they made (undone on failure, in reverse): the
    cgroup, the rootfs bind at criu-root, the fds handed to CRIU, its service."""

    def __init__(self, o: RestoreOptions, st: runtime_state.State, spec: Spec,
                 rootfs: str, image: str) -> None:
        self.o, self.st, self.spec, self.rootfs, self.image = o, st, spec, rootfs, image
        self.mgr: Manager | None = None
        self.criu_root = os.path.join(st.dir, "criu-root")
        self.mounted = False
        self.fds: list[int] = []
        self.console: int | None = None
        self.swrk: Any = None
        self.work = os.path.abspath(o.work_path) if o.work_path else image

    def run(self, raw: bytes) -> None:
        from cove.runtime import criu
        from cove.runtime.caller import write_pid_file

        self._prepare(raw)
        req = self._request()
        self.swrk = criu.Swrk(extra_fds=self.fds)
        assert self.mgr is not None
        self.mgr.apply(self.swrk.pid)  # CRIU restores the tree into the cgroup it runs in
        if any(h.version == 1 for h in self.mgr.hierarchies):
            for ctrl, path in _cg_roots(self.swrk.pid):
                cg = req.opts.cg_root.add()
                cg.ctrl, cg.path = ctrl, path
        resp = self.swrk.call(req, self._notify)
        self.swrk.close()
        self.swrk = None
        if not resp.success:
            raise criu.failure("restore", resp, os.path.join(self.work, "restore.log"))
        st = self.st
        pid = int(resp.restore.pid) if resp.HasField("restore") else st.pid
        if pid != st.pid:
            st.data["pid"] = pid
            st.data["init_start"] = runtime_state.proc_start_time(pid)
        st.data.pop("creating", None)
        st.save()
        if self.o.pid_file:
            write_pid_file(self.o.pid_file, pid)

    def _prepare(self, raw: bytes) -> None:
        """The state file, the cgroup made and set as by `create`, the mount points,
        the rootfs bound at criu-root, the image and work directories opened."""
        from cove.runtime.cgroups import open_manager
        from cove.runtime.create import cgroup_resources
        from cove.sys import libc

        o, st, spec = self.o, self.st, self.spec
        with open(os.path.join(st.dir, "config.json"), "wb") as f:
            f.write(raw)
        self.mgr = open_manager(spec.linux.cgroups_path or None, o.id, rootless=o.rootless,
                                systemd=o.systemd_cgroup)
        self.mgr.create()
        st.data["cgroup"] = self.mgr.to_state()
        self.mgr.set(cgroup_resources(spec))
        st.save()
        _mount_points(spec, self.rootfs)
        os.mkdir(self.criu_root, 0o755)
        libc.mount(self.rootfs, self.criu_root, None, libc.MS_BIND | libc.MS_REC)
        self.mounted = True
        self.fds.append(os.open(self.image, os.O_DIRECTORY | os.O_RDONLY))
        if self.work != self.image:
            os.makedirs(self.work, 0o700, exist_ok=True)
            self.fds.append(os.open(self.work, os.O_DIRECTORY | os.O_RDONLY))

    def _request(self) -> Any:
        """The RESTORE request: external namespaces, mounts and stdio handed over."""
        from cove.runtime import criu

        req = criu.request("RESTORE", self.o, self.fds[0], self.fds[-1], "restore.log")
        opts = req.opts
        opts.evasive_devices = True
        opts.rst_sibling = True
        opts.root = self.criu_root
        for flavor, key, path in joined_namespaces(self.spec):
            try:
                nfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CoveError(f"linux.namespaces {flavor} {path}", os_why(e)) from None
            self.fds.append(nfd)
            inh = opts.inherit_fd.add()
            inh.key, inh.fd = key, nfd
        for key, val in external_mounts(self.spec, self.mgr, restoring=True):
            ext = opts.ext_mnt.add()
            ext.key, ext.val = key, val
        for key, fd in _inherit(self.image):
            inh = opts.inherit_fd.add()
            inh.key, inh.fd = key, fd
        if self.o.console_socket:
            from cove.runtime.caller import connect_console

            self.console = connect_console(self.o.console_socket)
            self.fds.append(self.console)
        return req

    def _notify(self, script: str, pid: int, got: list[int]) -> None:
        """post-restore: the state file gets the new init's pid (so `state`, `kill`,
        `exec` work at once); orphan-pts-master: the pty master to --console-socket."""
        if script == "post-restore":
            self.st.data["pid"] = pid
            self.st.data["init_start"] = runtime_state.proc_start_time(pid)
            self.st.save()
        elif script == "orphan-pts-master" and self.console is not None and got:
            import socket

            s = socket.socket(fileno=os.dup(self.console))
            try:
                socket.send_fds(s, [b"/dev/ptmx"], [got[0]])
            finally:
                s.close()

    def undo(self) -> None:
        if self.swrk is not None:
            self.swrk.proc.kill()
            self.swrk.close()
            self.swrk = None
        _unmount(self.criu_root, self.mounted)
        self.mounted = False  # before _undo removes the state directory: not the rootfs
        _undo(self.st, self.mgr)

    def close(self) -> None:
        _unmount(self.criu_root, self.mounted)
        self.mounted = False
        for fd in self.fds:
            os.close(fd)
        self.fds = []


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
