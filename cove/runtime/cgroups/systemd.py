"""The systemd cgroup driver (`--systemd-cgroup`): systemd owns the cgroup tree.

On a host whose pid 1 is systemd, a process that writes the tree systemd manages
fights it (systemd moves processes back, trims cgroups it does not know, rewrites
limits). runc's driver, followed here, asks systemd instead, over its D-Bus API
(cove.sys.dbus): StartTransientUnit makes a transient scope `<prefix>-<name>.scope` in
the slice of the `slice:prefix:name` cgroupsPath, with the container's init in it
(PIDs), Delegate=yes and the resource properties of linux.resources
(cgroups.sdprops); SetUnitProperties changes them on `update`; StopUnit removes it on
`delete`. What systemd has no property for is written to the scope's files, once
systemd made them, as runc does.

The scope's directory in each hierarchy is the one systemd gives it: under pid 1's
own cgroup there (less its /init.scope, as runc's GetInitCgroup), then the slice's
path, then the unit. It is made beforehand (systemd takes an existing directory as
its own): init binds the container's cgroup directories while the runtime asks for
the unit. Imported only with --systemd-cgroup: none of this is on the default path.
"""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.runtime.cgroups import sdprops
from cove.runtime.cgroups.base import CGROUP_ROOT, Manager, _asked
from cove.runtime.cgroups.detect import find_hierarchies, parse_proc_cgroup
from cove.sys import dbus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SYSTEMD_DIR = "/run/systemd/system"
DEST = "org.freedesktop.systemd1"
OBJ = "/org/freedesktop/systemd1"
MGR = "org.freedesktop.systemd1.Manager"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"
FLAG = "--systemd-cgroup"
# (linux.resources section, the controller its files need, keys that ask for nothing)
_NEEDS = (("memory", "memory", ("checkBeforeUpdate",)), ("cpu", "cpu", ("cpus", "mems")),
          ("cpu", "cpuset", ()), ("pids", "pids", ()), ("blockIO", "io", ()),
          ("hugepageLimits", "hugetlb", ()))


def expand_slice(sl: str) -> str:
    """systemd's "a-b.slice" as its cgroup path "/a.slice/a-b.slice"."""
    if sl in ("", "-.slice"):
        return ""
    if not sl.endswith(".slice") or "/" in sl:
        raise CoveError("cgroupsPath", f"invalid slice name {sl!r}")
    path = prefix = ""
    for part in sl[: -len(".slice")].split("-"):
        if not part:
            raise CoveError("cgroupsPath", f"invalid slice name {sl!r}")
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def parse_path(spec: str, container_id: str) -> tuple[str, str]:
    """(slice, unit) of a `slice:prefix:name` cgroupsPath (empty: system.slice:cove:ID)."""
    if not spec:
        spec = f"system.slice:cove:{container_id}"
    parts = spec.split(":")
    if len(parts) != 3 or spec.startswith("/"):
        raise CoveError("cgroupsPath", f"expected slice:prefix:name for systemd, got {spec!r}")
    sl, prefix, name = parts
    if not name or "/" in name or "/" in prefix:
        raise CoveError("cgroupsPath", f"expected slice:prefix:name for systemd, got {spec!r}")
    unit = name if name.endswith(".slice") else (
        f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return sl or "system.slice", unit


def connect() -> dbus.Connection:
    """systemd's private socket when root (as runc: no dbus-daemon needed), else the
    system bus; a CoveError saying which is missing."""
    if not os.path.isdir(SYSTEMD_DIR):
        raise CoveError(FLAG, f"no systemd: {SYSTEMD_DIR} is missing (pid 1 is not systemd)")
    paths = [dbus.SYSTEMD_PRIVATE, dbus.SYSTEM_BUS] if os.geteuid() == 0 else [dbus.SYSTEM_BUS]
    why = ""
    for path in paths:
        try:
            c = dbus.Connection(path, bus=path != dbus.SYSTEMD_PRIVATE)
        except OSError as e:
            why += f"{'; ' if why else ''}{path}: {e.strerror or e}"
            continue
        if c.bus:
            _subscribe(c)
        return c
    raise CoveError(FLAG, f"no D-Bus connection to systemd ({why})")


def _subscribe(c: dbus.Connection) -> None:
    """On the system bus, JobRemoved only with a match rule for it and systemd's
    Subscribe (it signals on the bus only while a client is subscribed; its private
    socket gets every signal unasked): without them a job's end never came."""
    try:
        c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
               "AddMatch", "s", [f"type='signal',sender='{DEST}',path='{OBJ}',"
                                 f"interface='{MGR}',member='JobRemoved'"])
        c.call(DEST, OBJ, MGR, "Subscribe")
    except (OSError, dbus.DBusError) as e:
        c.close()
        why = e.strerror if isinstance(e, OSError) else e.why
        raise CoveError(FLAG, f"D-Bus {c.path}: subscribing to systemd's signals: "
                              f"{why or e}") from None


class SystemdManager(Manager):
    """A Manager whose cgroup is a transient systemd scope."""

    def __init__(self, *args: Any, unit: str = "", slice_: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.unit = unit
        self.slice = slice_
        # True once this runtime started the unit: a unit found already there (another
        # container's) is never stopped by this one's clean-up.
        self.owned = False
        self.pending: dict[str, Any] | None = None
        # True once create() found no such unit and made the scope's directories: until
        # then they are another container's, if there, and destroy() leaves them be.
        self.made = False
        self.parents: list[str] = []
        self._bus: dbus.Connection | None = None

    @property
    def bus(self) -> dbus.Connection:
        if self._bus is None:
            self._bus = connect()
        return self._bus

    def _call(self, member: str, sig: str, args: list[Any]) -> list[Any]:
        try:
            return self.bus.call(DEST, OBJ, MGR, member, sig, args)
        except OSError as e:
            raise CoveError(f"systemd {member} {self.unit}", e.strerror or str(e)) from None

    def _job(self, member: str, sig: str, args: list[Any]) -> None:
        """A call that queues a job; waits for its JobRemoved and checks the result."""
        self.bus  # noqa: B018  (connected before the call: its errors say so)
        job = self._call(member, sig, args)[0]
        while True:
            try:
                msg = self.bus.signal("JobRemoved")
            except OSError as e:
                raise CoveError(f"systemd {member} {self.unit}",
                                f"waiting for job {job}: {e.strerror or e}") from None
            _id, path, _unit, result = msg.body
            if path == job:
                break
        if result != "done":
            raise CoveError(f"systemd unit {self.unit}", f"{member}: job {result}")

    # Lifecycle.

    def create(self) -> None:
        try:
            self._call("GetUnit", "s", [self.unit])
        except dbus.DBusError as e:
            if e.name != NO_SUCH_UNIT:
                raise CoveError(f"systemd unit {self.unit}", e.why) from None
        else:
            raise CoveError(f"systemd unit {self.unit}", "already exists")
        self.made = True
        # The slice directories this makes (a slice systemd has not started yet): systemd
        # takes them over with the unit; if it refuses the unit, destroy() removes them.
        for d in self.dirs:
            up = os.path.dirname(d)
            while up and not os.path.isdir(up):
                self.parents.append(up)
                up = os.path.dirname(up)
        super().create()

    def join_fds(self) -> list[int]:
        return []  # the unit's start moves init, in every hierarchy systemd manages

    def clone_fd(self) -> int:
        return -1  # as join_fds: the unit's start moves init

    def needs_apply(self, v1: bool = True, v2: bool = True) -> bool:
        return True

    def apply(self, pid: int, v1: bool = True, v2: bool = True) -> None:
        """Start the scope with pid in it, then put pid where systemd does not (the
        hierarchies it leaves alone) and write what has no systemd property.

        A unit already started (the manager reopened from the state: `exec`) is only
        joined, as runc's exec enters the container's cgroup paths: a second
        StartTransientUnit would be refused as an existing unit."""
        if self.owned:
            super().apply(pid, v1, v2)
            return
        v2 = self.layout == "v2"
        props = sdprops.unit_properties(f"cove container {self.unit}", self.slice, pid, v2)
        props += sdprops.properties(self.pending, v2)
        try:
            self._job("StartTransientUnit", "ssa(sv)a(sa(sv))",
                      [self.unit, "replace", props, []])
        except dbus.DBusError as e:  # refused: systemd made no unit
            if e.name == UNIT_EXISTS:
                raise CoveError(f"systemd unit {self.unit}", "already exists") from None
            raise CoveError(f"systemd unit {self.unit}", f"systemd refused it: {e.why}") \
                from None
        except BaseException:
            self.owned = True  # a job that failed leaves a failed unit to reset
            raise
        self.owned = True
        super().apply(pid, True)
        if self.pending:
            super().set(self.pending)
            self.pending = None

    def set(self, resources: dict[str, Any] | None, *, update: bool = False) -> None:
        props = sdprops.properties(resources, self.layout == "v2")  # checks them too
        self.check_controllers(resources)
        if not self.owned:
            self.pending = resources  # for apply(): the unit starts with them
            return
        if props:
            try:
                self._call("SetUnitProperties", "sba(sv)", [self.unit, True, props])
            except dbus.DBusError as e:
                raise CoveError(f"systemd unit {self.unit}",
                                f"systemd refused the update: {e.why}") from None
        super().set(resources, update=update)

    def check_controllers(self, resources: dict[str, Any] | None) -> None:
        """A limit whose controller this host lacks (on a v2 host: not in the root's
        cgroup.controllers) is one line before systemd is asked anything.

        runc's systemd driver gives systemd the property (which systemd accepts and
        cannot apply) and then fails on the cgroup file it writes after it, leaving a
        started unit to stop (create) or a changed property (update): the same refusal
        here, with the controller named, and nothing changed."""
        if not isinstance(resources, dict):
            return
        for key, ctrl, skip in _NEEDS:
            section = resources.get(key)
            if key == "cpu" and isinstance(section, dict) and ctrl == "cpuset":
                section = {k: section.get(k) for k in ("cpus", "mems")}
            if key == "pids" and isinstance(section, dict):
                lim = section.get("limit")
                section = {"limit": lim} if isinstance(lim, int) and lim > 0 else {}
            asked = _asked(section, skip)
            if key == "blockIO" and self.layout != "v2" and self._find("blkio") is not None:
                ctrl = "blkio"
            if asked is not None and self._find(ctrl) is None:
                where = f"{sdprops.R}.{key}" + (f".{asked}" if asked else "")
                self._dir_for(ctrl, where)  # raises: the controller is missing
        uni = resources.get("unified")
        if isinstance(uni, dict) and self.layout != "v1":
            for k in uni:
                ctrl = str(k).split(".", 1)[0]
                if ctrl != "cgroup" and self._find(ctrl) is None:
                    self._dir_for(ctrl, f"{sdprops.R}.unified.{k}")

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what is left (as the fs driver does), stop the unit, remove the rest."""
        import time

        if not (self.owned or self.made):
            return
        deadline = time.monotonic() + timeout
        if self.exists() and self.pids():
            self.kill_all(9)
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.owned:
            try:
                self._job("StopUnit", "ss", [self.unit, "replace"])
            except dbus.DBusError as e:
                if e.name != NO_SUCH_UNIT:
                    raise CoveError(f"systemd unit {self.unit}", f"stop: {e.why}") from None
            try:
                self._call("ResetFailedUnit", "s", [self.unit])
            except dbus.DBusError:
                pass  # not failed, or gone
        super().destroy(max(0.1, deadline - time.monotonic()))
        if not self.owned:  # systemd never took them: ours to remove, deepest first
            for d in sorted(self.parents, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # not empty: another's by now

    # Persistence.

    def to_state(self) -> dict[str, Any]:
        d = super().to_state()
        d["systemd"] = {"unit": self.unit, "slice": self.slice}
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> SystemdManager:
        m = super().from_state(d)
        assert isinstance(m, SystemdManager)
        sd = d.get("systemd") or {}
        m.unit, m.slice = str(sd.get("unit", "")), str(sd.get("slice", ""))
        m.owned = m.made = True  # recorded by the create that found no such unit
        return m


def init_prefix(text: str, key: str) -> str:
    """pid 1's cgroup in a hierarchy less /init.scope: where systemd roots its slices."""
    p = parse_proc_cgroup(text).get(key, "/")
    if p.endswith("/init.scope"):
        p = p[: -len("/init.scope")]
    return p if p != "/" else ""


def open_manager(spec: str, container_id: str, *, rootless: bool = False,
                 root: str = CGROUP_ROOT, mountinfo: str | None = None,
                 proc1_cgroup: str | None = None,
                 v2_controllers: list[str] | None = None) -> SystemdManager:
    """The manager of the scope for `slice:prefix:name` (nothing asked of systemd yet)."""
    sl, unit = parse_path(spec, container_id)
    rel = expand_slice(sl) + "/" + unit
    layout, hierarchies = find_hierarchies(mountinfo, v2_controllers=v2_controllers)
    if proc1_cgroup is None:
        with open("/proc/1/cgroup") as f:
            proc1_cgroup = f.read()
    if layout == "hybrid" and not parse_proc_cgroup(proc1_cgroup).get("", "").endswith(
            "/init.scope"):
        # systemd in legacy mode (pid 1 not in the unified hierarchy's init.scope: in
        # a container that hides it, say) makes no scope there: nor does the driver.
        hierarchies = [h for h in hierarchies if h.version == 1]
    dirs = []
    for h in hierarchies:
        mine = init_prefix(proc1_cgroup, "" if h.version == 2 else h.controllers[0])
        if h.root != "/" and (mine == h.root or mine.startswith(h.root + "/")):
            mine = mine[len(h.root):]
        dirs.append(h.mountpoint.rstrip("/") + mine + rel)
    return SystemdManager(rel, layout, hierarchies, dirs, root=root.rstrip("/") or "/",
                          rootless=rootless, unit=unit, slice_=sl)
