"""The cgroup Manager: one container cgroup across every hierarchy of the host."""

from __future__ import annotations

import errno
import os
import time

from cove.errors import CoveError
from cove.runtime.cgroups import fs, hybrid
from cove.runtime.cgroups.detect import Hierarchy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.runtime.cgroups import v1, v2
else:
    class _Lazy:
        """A module imported on its first attribute: `delete`, `kill`, `start` of a
        container's processes need neither v1's nor v2's knobs (~1 ms of start-up)."""

        def __init__(self, name):
            self._name = f"cove.runtime.cgroups.{name}"

        def __getattr__(self, attr):
            return getattr(__import__(self._name, fromlist=[attr]), attr)

    v1 = _Lazy("v1")
    v2 = _Lazy("v2")

CGROUP_ROOT = "/sys/fs/cgroup"
# Not SIGKILL: importing signal pulls in enum on the hot path.
SIGKILL = 9
R = "linux.resources"
_CPUSET_KEYS = ("cpus", "mems")


def _asked(section: object, skip: tuple[str, ...] = ()) -> str | None:
    """The first key of a resources section that asks for something, if any.

    0, false, null and empty values are runc's "not set".
    """
    if isinstance(section, list):
        return "" if section else None
    if not isinstance(section, dict):
        return None
    for k, v in section.items():
        if k not in skip and v not in (None, 0, False, "", [], {}):
            return str(k)
    return None


class Manager:
    """A container's cgroup: create, join, limit, freeze, count, kill, remove."""

    def __init__(
        self,
        path: str,
        layout: str,
        hierarchies: list[Hierarchy],
        dirs: list[str],
        *,
        root: str = CGROUP_ROOT,
        rootless: bool = False,
    ) -> None:
        self.path = path
        self.layout = layout
        self.hierarchies = hierarchies
        self.dirs = dirs
        self.root = root
        self.rootless = rootless
        # Hierarchies a rootless create() could not write; never touched again.
        self.skipped: set[int] = set()
        # Set when the path is Cove's default (/cove/<id>): destroy() then also removes
        # the shared /cove parent once it is empty, so no trace is left on the host.
        self.prune_parent = False

    # Lookup.

    def _live(self) -> list[tuple[Hierarchy, str]]:
        return [
            (h, d) for i, (h, d) in enumerate(zip(self.hierarchies, self.dirs, strict=True))
            if i not in self.skipped
        ]

    def _find(self, ctrl: str) -> int | None:
        for i, h in enumerate(self.hierarchies):
            if ctrl in h.controllers:
                return i
        return None

    def _v2(self) -> int | None:
        for i, h in enumerate(self.hierarchies):
            if h.version == 2:
                return i
        return None

    def _dir_for(self, ctrl: str, knob: str) -> tuple[str, int]:
        """(directory, version) of the hierarchy serving ctrl, or a CoveError naming knob."""
        i = self._find(ctrl)
        if i is None:
            v2i = self._v2()
            if v2i is not None and self.layout == "v2":
                raise CoveError(knob, f"the {ctrl} controller is not available "
                                f"(not in {self.hierarchies[v2i].mountpoint}/cgroup.controllers)")
            raise CoveError(knob, f"{ctrl} controller is not mounted")
        if i in self.skipped:
            raise CoveError(knob, f"cgroup {self.dirs[i]} is not writable (rootless)")
        h, d = self.hierarchies[i], self.dirs[i]
        if h.version == 2:
            # Idempotent: skips what the parents already delegate.
            v2.enable_controllers(h.mountpoint, d, [ctrl], knob)
        return d, h.version

    # Lifecycle.

    def create(self) -> None:
        """mkdir in every hierarchy (idempotent) and prepare what joining needs."""
        for i, (h, d) in enumerate(zip(self.hierarchies, self.dirs, strict=True)):
            if i in self.skipped:
                continue
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                if self.rootless and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    # Silently, as runc: a knob asked of it fails later with its name,
                    # and create() says once if that leaves the container unkillable.
                    self.skipped.add(i)
                    continue
                raise CoveError("cgroup", f"mkdir {d}: {e.strerror}") from e
            if h.version == 1 and "cpuset" in h.controllers:
                v1.init_cpuset(h.mountpoint, d)
            if h.version == 2 and hybrid.enable_eagerly(self.layout):
                self._enable_all(h, d)

    def _enable_all(self, h: Hierarchy, d: str) -> None:
        try:
            v2.enable_controllers(h.mountpoint, d, h.controllers, "cgroup")
        except CoveError:
            # One refused controller (busy, RT tasks) must not block the rest;
            # a knob of the refused one fails later with its own name.
            for c in h.controllers:
                try:
                    v2.enable_controllers(h.mountpoint, d, [c], "cgroup")
                except CoveError:
                    pass

    def join_fds(self) -> list[int]:
        """Write-only fds on the `tasks` file of every v1 hierarchy, for the forked
        stage-1 child to join by writing "0" (nsexec.NsPlan.cgroup_fds), or [] when
        that cannot be done here (not root, rootless, a hierarchy refused).

        Why: a write to `cgroup.procs` (or of another pid) takes the kernel's global
        cgroup_threadgroup_rwsem for writing, whose first writer in a while waits out
        an RCU grace period (7-17 ms on this host) while holding cgroup_mutex, which
        stalls every cgroup mkdir meanwhile. A single-threaded process moving itself
        through `tasks` ("0": the writer) skips that lock (0.2 ms). The files are
        opened here, by the host's root in the host's namespaces: the kernel checks
        the opener's credentials, and the child's later namespaces do not matter. v2
        has no such file for a domain cgroup: apply(pid, v1=False) moves the rest."""
        if self.rootless or os.geteuid() != 0:
            return []
        fds: list[int] = []
        try:
            for i, (h, d) in enumerate(zip(self.hierarchies, self.dirs, strict=True)):
                if h.version == 1 and i not in self.skipped:
                    fds.append(os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            return []
        return fds

    def clone_fd(self) -> int:
        """An fd on the cgroup2 directory, for the runtime to fork its stage-1 child
        into (libc.fork_into_cgroup; nsexec.NsPlan.cgroup_dirfd), or -1 when there is
        none or that cannot be done here (not root, rootless).

        Why: the other way into a cgroup2 cgroup, a write to cgroup.procs, waits out an
        RCU grace period with cgroup_mutex held (join_fds); a child born there does
        not. The fork is the runtime's own, as the host's root in the host's
        namespaces, before the child's namespaces or uid maps could matter."""
        i = self._v2()
        if i is None or i in self.skipped or self.rootless or os.geteuid() != 0:
            return -1
        try:
            return os.open(self.dirs[i], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return -1

    def needs_apply(self, v1: bool = True, v2: bool = True) -> bool:
        """Whether apply(pid, v1, v2) has anything to move."""
        return any(v1 if h.version == 1 else v2 for h, _d in self._live())

    def apply(self, pid: int, v1: bool = True, v2: bool = True) -> None:
        """Move pid into the cgroup in every hierarchy; v1=False leaves out the v1
        ones (the child joined them itself through join_fds), v2=False the cgroup2
        one (the child was born there: clone_fd)."""
        for i, (h, d) in enumerate(zip(self.hierarchies, self.dirs, strict=True)):
            if i in self.skipped or not (v1 if h.version == 1 else v2):
                continue
            try:
                fs.write(d, "cgroup.procs", str(pid), "cgroup")
            except CoveError as e:
                err = e.__cause__
                if self.rootless and isinstance(err, OSError) and err.errno in (
                    errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS
                ):
                    self.skipped.add(i)
                    continue
                raise CoveError("cgroup", f"add pid {pid} to {d}: {e.why}") from err

    def set(self, resources: dict[str, Any] | None, *, update: bool = False) -> None:
        """Apply OCI linux.resources; a knob that cannot be honoured is an error."""
        if resources is None:
            return
        if not isinstance(resources, dict):
            raise CoveError(R, "expected object")
        for key in resources:
            handler = _SECTIONS.get(key)
            if handler is None:
                raise CoveError(f"{R}.{key}", "unknown resource")
            section = resources[key]
            if section is None:
                continue
            handler(self, section, f"{R}.{key}", update)

    def update(self, resources: dict[str, Any]) -> None:
        """Live update: only the keys given change (checkBeforeUpdate honoured)."""
        self.set(resources, update=True)

    # Sections of linux.resources.

    def _memory(self, mem: object, where: str, update: bool) -> None:
        mem = _obj(mem, where)
        k = _asked(mem, ("checkBeforeUpdate",))
        if k is None:
            return
        d, ver = self._dir_for("memory", f"{where}.{k}")
        (v1 if ver == 1 else v2).set_memory(d, mem, where, update)

    def _cpu(self, cpu: object, where: str, update: bool) -> None:
        cpu = _obj(cpu, where)
        k = _asked(cpu, _CPUSET_KEYS)
        if k is not None:
            d, ver = self._dir_for("cpu", f"{where}.{k}")
            (v1 if ver == 1 else v2).set_cpu(d, cpu, where, update)
        k = _asked({x: cpu.get(x) for x in _CPUSET_KEYS})
        if k is not None:
            d, ver = self._dir_for("cpuset", f"{where}.{k}")
            (v1 if ver == 1 else v2).set_cpuset(d, cpu, where, update)

    def _pids(self, pids: object, where: str, update: bool) -> None:
        pids = _obj(pids, where)
        if "limit" not in pids or pids["limit"] is None:
            return
        limit = fs.get_int(pids, "limit", where)
        i = self._find("pids")
        if (i is None or i in self.skipped) and limit is not None and limit <= 0:
            return  # "unlimited" asks for nothing
        d, ver = self._dir_for("pids", f"{where}.limit")
        (v1 if ver == 1 else v2).set_pids(d, pids, where, update)

    def _block_io(self, bio: object, where: str, update: bool) -> None:
        bio = _obj(bio, where)
        k = _asked(bio)
        if k is None:
            return
        if self._find("blkio") is not None or self._find("io") is None:
            d, _ = self._dir_for("blkio", f"{where}.{k}")
            v1.set_blkio(d, bio, where, update)
        else:
            d, _ = self._dir_for("io", f"{where}.{k}")
            v2.set_io(d, bio, where, update)

    def _hugetlb(self, limits: object, where: str, update: bool) -> None:
        if not isinstance(limits, list):
            raise CoveError(where, "expected array")
        if not limits:
            return
        d, ver = self._dir_for("hugetlb", where)
        (v1 if ver == 1 else v2).set_hugetlb(d, limits, where, update)

    def _network(self, net: object, where: str, update: bool) -> None:
        net = _obj(net, where)
        classid = fs.get_uint(net, "classID", where)
        if classid is not None:
            d, _ = self._dir_for_v1("net_cls", f"{where}.classID")
            v1.set_net_cls(d, classid, f"{where}.classID")
        prios = fs.get_list(net, "priorities", where)
        if prios:
            d, _ = self._dir_for_v1("net_prio", f"{where}.priorities")
            v1.set_net_prio(d, prios, f"{where}.priorities")

    def _dir_for_v1(self, ctrl: str, knob: str) -> tuple[str, int]:
        i = self._find(ctrl)
        if i is None or self.hierarchies[i].version != 1:
            raise CoveError(knob, f"{ctrl} controller is not mounted")
        return self._dir_for(ctrl, knob)

    def _devices(self, devs: object, where: str, update: bool) -> None:
        if not isinstance(devs, list):
            raise CoveError(where, "expected array")
        for i, dev in enumerate(devs):
            if not isinstance(dev, dict):
                raise CoveError(f"{where}[{i}]", "expected object")
        if self._find("devices") is not None:
            d, _ = self._dir_for("devices", where)
            v1.set_devices(d, devs, where, update)
            return
        v2i = self._v2()
        if v2i is None or self.layout != "v2":
            if devs:
                raise CoveError(where, "devices controller is not mounted")
            return
        if v2i in self.skipped:
            if devs:
                raise CoveError(where, f"cgroup {self.dirs[v2i]} is not writable (rootless)")
            return
        from cove.runtime.cgroups import devices_bpf

        rules = [v1.device_rule(dev, f"{where}[{i}]") for i, dev in enumerate(devs)]
        devices_bpf.apply(self.dirs[v2i], rules, where)

    def _unified(self, uni: object, where: str, update: bool) -> None:
        uni = _obj(uni, where)
        if not uni:
            return
        i = self._v2()
        if i is None or self.layout == "v1":
            raise CoveError(where, "cgroup v2 is not mounted")
        if i in self.skipped:
            raise CoveError(where, f"cgroup {self.dirs[i]} is not writable (rootless)")
        h, d = self.hierarchies[i], self.dirs[i]
        for key in uni:
            ctrl = key.split(".", 1)[0]
            if ctrl in h.controllers:
                v2.enable_controllers(h.mountpoint, d, [ctrl], f"{where}.{key}")
        v2.set_unified(d, uni, where, h.controllers)

    def _rdma(self, rdma: object, where: str, update: bool) -> None:
        rdma = _obj(rdma, where)
        if rdma:
            d, _ = self._dir_for("rdma", where)
            v1.set_rdma(d, rdma, where, update)  # same rdma.max format in v1 and v2

    # Processes.

    def _procs_dir(self) -> str | None:
        """The hierarchy to count processes in: pids, freezer, then any."""
        for ctrl in ("pids", "freezer"):
            i = self._find(ctrl)
            if i is not None and i not in self.skipped and self.hierarchies[i].version == 1:
                return self.dirs[i]
        live = self._live()
        v1s = [d for h, d in live if h.version == 1 and not h.controllers[0].startswith("name=")]
        if v1s:
            return v1s[0]
        return live[0][1] if live else None

    def pids(self) -> list[int]:
        """Every process in the cgroup, descendants included."""
        d = self._procs_dir()
        return fs.procs(d) if d and os.path.isdir(d) else []

    def _freezer(self) -> tuple[str, int] | None:
        i = self._find("freezer")
        if i is None or self.hierarchies[i].version != 1:
            i = self._v2()
        if i is None or i in self.skipped:
            return None
        return self.dirs[i], self.hierarchies[i].version

    def freeze(self) -> None:
        _control().freeze(self)

    def thaw(self) -> None:
        _control().thaw(self)

    def frozen(self) -> bool:
        fz = self._freezer()
        return fz is not None and (v1 if fz[1] == 1 else v2).frozen(fz[0])

    def kill_all(self, sig: int) -> None:
        """Signal every process; frozen meanwhile so none can fork away."""
        _control().kill_all(self, sig)

    def destroy(self, timeout: float = 5.0) -> None:
        """SIGKILL what is left, wait for it to go (bounded), rmdir deepest first."""
        if not self.exists():
            return
        deadline = time.monotonic() + timeout
        if self.pids():
            self.kill_all(SIGKILL)
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
        errors: list[str] = []
        for _h, d in self._live():
            err = fs.rmtree(d, deadline)
            if err:
                errors.append(err)
            elif self.prune_parent:
                try:
                    os.rmdir(os.path.dirname(d))
                except OSError:
                    pass  # other containers still live there
        if errors:
            raise CoveError("cgroup", "; ".join(errors))

    def exists(self) -> bool:
        return any(os.path.isdir(d) for _h, d in self._live())

    def oom_count(self) -> int:
        count: int = _control().oom_count(self)
        return count

    def stats(self) -> dict[str, Any]:
        """runc's `events --stats` data object."""
        out: dict[str, Any] = _control().stats(self)
        return out

    def mounts(self) -> list[tuple[str, str]]:
        """(host dir, dest under the container's /sys/fs/cgroup) per hierarchy."""
        out = []
        for h, d in self._live():
            mp = h.mountpoint.rstrip("/") or "/"
            if mp == self.root:
                dest = ""
            elif mp.startswith(self.root + "/"):
                dest = mp[len(self.root) + 1 :]
            else:
                dest = os.path.basename(mp)
            out.append((d, dest))
        return out

    # Persistence across cove-runtime invocations.

    def to_state(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "layout": self.layout,
            "root": self.root,
            "rootless": self.rootless,
            "prune_parent": self.prune_parent,
            "hierarchies": [
                {"mountpoint": h.mountpoint, "version": h.version,
                 "controllers": list(h.controllers), "root": h.root, "dir": d,
                 "skipped": i in self.skipped}
                for i, (h, d) in enumerate(zip(self.hierarchies, self.dirs, strict=True))
            ],
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Manager:
        try:
            hs = d["hierarchies"]
            m = cls(
                d["path"], d["layout"],
                [Hierarchy(x["mountpoint"], x["version"], list(x["controllers"]),
                           x.get("root", "/")) for x in hs],
                [x["dir"] for x in hs],
                root=d.get("root", CGROUP_ROOT), rootless=bool(d.get("rootless")),
            )
            m.skipped = {i for i, x in enumerate(hs) if x.get("skipped")}
            m.prune_parent = bool(d.get("prune_parent"))
        except (KeyError, TypeError) as e:
            raise CoveError("state.json", f"bad cgroup state: {e}") from None
        return m


_SECTIONS = {
    "memory": Manager._memory,
    "cpu": Manager._cpu,
    "pids": Manager._pids,
    "blockIO": Manager._block_io,
    "hugepageLimits": Manager._hugetlb,
    "network": Manager._network,
    "devices": Manager._devices,
    "unified": Manager._unified,
    "rdma": Manager._rdma,
}


def _control() -> Any:
    """cgroups.control, imported on first use: `run` never freezes, kills or counts."""
    return __import__("cove.runtime.cgroups.control", fromlist=["kill_all"])


def _obj(v: object, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise CoveError(where, "expected object")
    return v
