"""The OCI runtime-spec config.json as typed objects.

`Spec.parse(text)` validates while it builds: any error is a `CoveError` whose `what`
is the JSON path (`process.user.uid`) and whose `why` says what was wrong
(`expected integer`). `linux.resources` and `linux.seccomp` are kept as validated
dicts: the cgroup and seccomp layers own their finer rules.
"""

from __future__ import annotations

from cove.errors import CoveError
from cove.oci import jsonio
from cove.sys.caps import CAPS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_MAJOR = 1

NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")


def _bad(path: str, why: str) -> CoveError:
    return CoveError(path, why)


_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}


def _get(obj: dict[str, Any], key: str, typ: type, path: str, required: bool = False,
         default: Any = None) -> Any:
    v = obj.get(key)
    if v is None:
        if required:
            raise _bad(f"{path}.{key}" if path else key, "required field is missing")
        return default
    # bool is an int subclass: keep them apart.
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise _bad(f"{path}.{key}" if path else key, f"expected {_TYPE_NAMES[typ]}")
    return v


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(path, "expected object")
    return v


def _strlist(obj: dict[str, Any], key: str, path: str) -> list[str]:
    v = _get(obj, key, list, path, default=[])
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise _bad(f"{path}.{key}[{i}]", "expected string")
    checked: list[str] = v
    return checked


def _intlist(obj: dict[str, Any], key: str, path: str) -> list[int]:
    v = _get(obj, key, list, path, default=[])
    for i, s in enumerate(v):
        if not isinstance(s, int) or isinstance(s, bool):
            raise _bad(f"{path}.{key}[{i}]", "expected integer")
    checked: list[int] = v
    return checked


class User:
    __slots__ = ("additional_gids", "gid", "uid", "umask", "username")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.uid: int = _get(o, "uid", int, p, default=0)
        self.gid: int = _get(o, "gid", int, p, default=0)
        self.umask: int | None = _get(o, "umask", int, p)
        self.additional_gids: list[int] = _intlist(o, "additionalGids", p)
        self.username: str = _get(o, "username", str, p, default="")
        for f in ("uid", "gid"):
            if not 0 <= getattr(self, f) < 2**32:
                raise _bad(f"{p}.{f}", "out of range")


class Capabilities:
    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")
    ambient: list[str]
    bounding: list[str]
    effective: list[str]
    inheritable: list[str]
    permitted: list[str]

    def __init__(self, o: dict[str, Any], p: str) -> None:
        for s in self.__slots__:
            names = _strlist(o, s, p)
            for i, n in enumerate(names):
                if n not in CAPS:
                    raise _bad(f"{p}.{s}[{i}]", f"unknown capability {n!r}")
            setattr(self, s, names)


class Rlimit:
    __slots__ = ("hard", "resource", "soft", "type")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.type: str = _get(o, "type", str, p, required=True)
        if self.type not in RLIMITS:
            raise _bad(f"{p}.type", f"unknown rlimit {self.type!r}")
        self.resource = RLIMITS[self.type]
        self.soft: int = _get(o, "soft", int, p, required=True)
        self.hard: int = _get(o, "hard", int, p, required=True)


class Process:
    __slots__ = ("apparmor_profile", "args", "capabilities", "console_size", "cwd", "env",
                 "io_priority", "no_new_privileges", "oom_score_adj", "rlimits",
                 "scheduler", "selinux_label", "terminal", "user")

    def __init__(self, o: dict[str, Any], p: str = "process", need_cwd: bool = True) -> None:
        self.terminal: bool = _get(o, "terminal", bool, p, default=False)
        cs = _get(o, "consoleSize", dict, p)
        self.console_size: tuple[int, int] | None = None
        if cs is not None:
            self.console_size = (_get(cs, "height", int, f"{p}.consoleSize", required=True),
                                 _get(cs, "width", int, f"{p}.consoleSize", required=True))
        self.user = User(_get(o, "user", dict, p, default={}), f"{p}.user")
        self.args: list[str] = _strlist(o, "args", p)
        if not self.args:
            raise _bad(f"{p}.args", "required field is missing" if "args" not in o
                       else "must not be empty")
        self.env: list[str] = _strlist(o, "env", p)
        self.cwd: str = _get(o, "cwd", str, p, required=need_cwd, default="/")
        if not self.cwd.startswith("/"):
            raise _bad(f"{p}.cwd", f"must be an absolute path, not {self.cwd!r}")
        caps = _get(o, "capabilities", dict, p)
        self.capabilities = Capabilities(caps, f"{p}.capabilities") if caps is not None else None
        self.rlimits = [Rlimit(_obj(r, f"{p}.rlimits[{i}]"), f"{p}.rlimits[{i}]")
                        for i, r in enumerate(_get(o, "rlimits", list, p, default=[]))]
        self.no_new_privileges: bool = _get(o, "noNewPrivileges", bool, p, default=False)
        self.apparmor_profile: str = _get(o, "apparmorProfile", str, p, default="")
        self.selinux_label: str = _get(o, "selinuxLabel", str, p, default="")
        self.oom_score_adj: int | None = _get(o, "oomScoreAdj", int, p)
        self.scheduler = _get(o, "scheduler", dict, p)
        self.io_priority = _get(o, "ioPriority", dict, p)


class Mount:
    __slots__ = ("destination", "options", "source", "type")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.destination: str = _get(o, "destination", str, p, required=True)
        if not self.destination.startswith("/"):
            # runc accepts relative destinations (relative to /); the spec says absolute.
            self.destination = "/" + self.destination
        self.type: str = _get(o, "type", str, p, default="")
        self.source: str = _get(o, "source", str, p, default="")
        self.options: list[str] = _strlist(o, "options", p)
        if o.get("uidMappings") or o.get("gidMappings"):
            raise _bad(f"{p}.uidMappings", "id-mapped mounts are not supported yet")


class Hook:
    __slots__ = ("args", "env", "path", "timeout")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.path: str = _get(o, "path", str, p, required=True)
        if not self.path.startswith("/"):
            raise _bad(f"{p}.path", f"must be an absolute path, not {self.path!r}")
        self.args: list[str] = _strlist(o, "args", p) or [self.path]
        # None when absent (or null): the hook inherits the runtime's environment, as
        # under runc and crun; `"env": []` is an empty environment. Keep them apart.
        self.env: list[str] | None = _strlist(o, "env", p) if o.get("env") is not None \
            else None
        self.timeout: int | None = _get(o, "timeout", int, p)
        if self.timeout is not None and self.timeout <= 0:
            raise _bad(f"{p}.timeout", "must be a positive number of seconds")


class IDMap:
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.container_id: int = _get(o, "containerID", int, p, required=True)
        self.host_id: int = _get(o, "hostID", int, p, required=True)
        self.size: int = _get(o, "size", int, p, required=True)
        if self.size <= 0:
            raise _bad(f"{p}.size", f"must be at least 1, not {self.size}")
        # The kernel's ids are 32-bit and (u32)-1 is never mapped: a range must end at
        # or below 2^32 - 1 on both sides.
        for key, first in (("containerID", self.container_id), ("hostID", self.host_id)):
            if first < 0:
                raise _bad(f"{p}.{key}", f"must not be negative, not {first}")
            if first + self.size > ID_LIMIT:
                raise _bad(f"{p}.{key}", f"{first} + size {self.size} goes past the "
                           f"last id, {ID_LIMIT - 1}")


# Ids are u32 and 4294967295 is "no id"; the kernel takes at most 340 lines per map.
ID_LIMIT = 2**32 - 1
MAX_ID_RANGES = 340


def _idmaps(o: dict[str, Any], key: str, p: str) -> list[IDMap]:
    raw = _get(o, key, list, p, default=[])
    if len(raw) > MAX_ID_RANGES:
        raise _bad(f"{p}.{key}", f"{len(raw)} ranges: the kernel takes at most "
                   f"{MAX_ID_RANGES}")
    maps = [IDMap(_obj(m, f"{p}.{key}[{i}]"), f"{p}.{key}[{i}]") for i, m in enumerate(raw)]
    # Overlapping ranges, on either side, are refused by the kernel with a bare EINVAL.
    for side, attr in (("containerID", "container_id"), ("hostID", "host_id")):
        spans = sorted((getattr(m, attr), getattr(m, attr) + m.size, i)
                       for i, m in enumerate(maps))
        for k in range(1, len(spans)):
            (_a0, a1, ai), (b0, b1, bi) = spans[k - 1], spans[k]
            if b0 < a1:
                i, j = max(ai, bi), min(ai, bi)
                raise _bad(f"{p}.{key}[{i}]", f"{side} range overlaps that of "
                           f"{p}.{key}[{j}] ({b0}-{min(a1, b1) - 1} in both)")
    return maps


class Device:
    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.type: str = _get(o, "type", str, p, required=True)
        if self.type not in ("c", "b", "u", "p"):
            raise _bad(f"{p}.type", f"unknown device type {self.type!r}")
        self.path: str = _get(o, "path", str, p, required=True)
        if not self.path.startswith("/"):
            raise _bad(f"{p}.path", "must be an absolute path")
        need = self.type != "p"
        self.major: int = _get(o, "major", int, p, required=need, default=0)
        self.minor: int = _get(o, "minor", int, p, required=need, default=0)
        self.file_mode: int | None = _get(o, "fileMode", int, p)
        self.uid: int | None = _get(o, "uid", int, p)
        self.gid: int | None = _get(o, "gid", int, p)


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, o: dict[str, Any], p: str) -> None:
        self.type: str = _get(o, "type", str, p, required=True)
        if self.type not in NAMESPACES:
            raise _bad(f"{p}.type", f"unknown namespace type {self.type!r}")
        self.path: str = _get(o, "path", str, p, default="")


class Linux:
    __slots__ = ("cgroups_path", "devices", "gid_mappings", "intel_rdt", "masked_paths",
                 "mount_label", "namespaces", "personality", "readonly_paths", "resources",
                 "rootfs_propagation", "seccomp", "sysctl", "time_offsets", "uid_mappings")

    def __init__(self, o: dict[str, Any], p: str = "linux") -> None:
        self.namespaces: list[Namespace] = []
        seen: set[str] = set()
        for i, n in enumerate(_get(o, "namespaces", list, p, default=[])):
            ns = Namespace(_obj(n, f"{p}.namespaces[{i}]"), f"{p}.namespaces[{i}]")
            if ns.type in seen:
                raise _bad(f"{p}.namespaces[{i}]", f"duplicate namespace {ns.type!r}")
            seen.add(ns.type)
            self.namespaces.append(ns)
        self.uid_mappings = _idmaps(o, "uidMappings", p)
        self.gid_mappings = _idmaps(o, "gidMappings", p)
        if (self.uid_mappings or self.gid_mappings) and "user" not in seen:
            raise _bad(f"{p}.uidMappings", "mappings given without a user namespace")
        to = _get(o, "timeOffsets", dict, p, default={})
        self.time_offsets: dict[str, tuple[int, int]] = {}
        for clock, v in to.items():
            if clock not in ("monotonic", "boottime"):
                raise _bad(f"{p}.timeOffsets.{clock}", "unknown clock")
            v = _obj(v, f"{p}.timeOffsets.{clock}")
            self.time_offsets[clock] = (_get(v, "secs", int, f"{p}.timeOffsets.{clock}",
                                             default=0),
                                        _get(v, "nanosecs", int, f"{p}.timeOffsets.{clock}",
                                             default=0))
        self.devices = [Device(_obj(d, f"{p}.devices[{i}]"), f"{p}.devices[{i}]")
                        for i, d in enumerate(_get(o, "devices", list, p, default=[]))]
        self.cgroups_path: str = _get(o, "cgroupsPath", str, p, default="")
        self.resources: dict[str, Any] | None = _get(o, "resources", dict, p)
        self.rootfs_propagation: str = _get(o, "rootfsPropagation", str, p, default="")
        if self.rootfs_propagation not in ("", "private", "rprivate", "slave", "rslave",
                                           "shared", "rshared", "unbindable", "runbindable"):
            raise _bad(f"{p}.rootfsPropagation", f"unknown propagation "
                       f"{self.rootfs_propagation!r}")
        self.seccomp: dict[str, Any] | None = _get(o, "seccomp", dict, p)
        sysctl = _get(o, "sysctl", dict, p, default={})
        for k, v in sysctl.items():
            if not isinstance(v, str):
                raise _bad(f"{p}.sysctl.{k}", "expected string")
        self.sysctl: dict[str, str] = sysctl
        self.masked_paths: list[str] = _strlist(o, "maskedPaths", p)
        self.readonly_paths: list[str] = _strlist(o, "readonlyPaths", p)
        self.mount_label: str = _get(o, "mountLabel", str, p, default="")
        self.personality: dict[str, Any] | None = _get(o, "personality", dict, p)
        if self.personality is not None:
            dom = _get(self.personality, "domain", str, f"{p}.personality", required=True)
            if dom not in ("LINUX", "LINUX32"):
                raise _bad(f"{p}.personality.domain", f"unknown domain {dom!r}")
        self.intel_rdt = _get(o, "intelRdt", dict, p)

    def ns(self, typ: str) -> Namespace | None:
        for n in self.namespaces:
            if n.type == typ:
                return n
        return None


class Hooks:
    __slots__ = HOOK_KINDS
    prestart: list[Hook]
    createRuntime: list[Hook]
    createContainer: list[Hook]
    startContainer: list[Hook]
    poststart: list[Hook]
    poststop: list[Hook]

    def __init__(self, o: dict[str, Any], p: str = "hooks") -> None:
        for kind in HOOK_KINDS:
            lst = _get(o, kind, list, p, default=[])
            setattr(self, kind, [Hook(_obj(h, f"{p}.{kind}[{i}]"), f"{p}.{kind}[{i}]")
                                 for i, h in enumerate(lst)])

    def get(self, kind: str) -> list[Hook]:
        hooks: list[Hook] = getattr(self, kind)
        return hooks


class Root:
    __slots__ = ("path", "readonly")

    def __init__(self, o: dict[str, Any], p: str = "root") -> None:
        self.path: str = _get(o, "path", str, p, required=True)
        self.readonly: bool = _get(o, "readonly", bool, p, default=False)


class Spec:
    """A parsed, validated config.json."""

    __slots__ = ("annotations", "domainname", "hooks", "hostname", "linux", "mounts",
                 "oci_version", "process", "raw", "root")

    def __init__(self, o: dict[str, Any]) -> None:
        self.raw = o
        self.oci_version: str = _get(o, "ociVersion", str, "", required=True)
        major = self.oci_version.split(".", 1)[0]
        if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
            raise _bad("ociVersion", f"unsupported version {self.oci_version!r} "
                       f"(supported: {SUPPORTED_MAJOR}.x)")
        proc = _get(o, "process", dict, "")
        self.process = Process(proc) if proc is not None else None
        root = _get(o, "root", dict, "")
        self.root = Root(root) if root is not None else None
        self.hostname: str = _get(o, "hostname", str, "", default="")
        self.domainname: str = _get(o, "domainname", str, "", default="")
        self.mounts = [Mount(_obj(m, f"mounts[{i}]"), f"mounts[{i}]")
                       for i, m in enumerate(_get(o, "mounts", list, "", default=[]))]
        self.hooks = Hooks(_get(o, "hooks", dict, "", default={}))
        ann = _get(o, "annotations", dict, "", default={})
        for k, v in ann.items():
            if not isinstance(v, str):
                raise _bad(f"annotations.{k}", "expected string")
        self.annotations: dict[str, str] = ann
        lin = _get(o, "linux", dict, "")
        self.linux = Linux(lin) if lin is not None else Linux({})
        if (self.hostname or self.domainname) and self.linux.ns("uts") is None:
            raise _bad("hostname", "setting the hostname needs a new uts namespace")

    @classmethod
    def parse(cls, text: str | bytes, source: str = "config.json") -> Spec:
        try:
            obj = jsonio.loads(text)
        except jsonio.JSONError as e:
            raise CoveError(source, f"invalid JSON: {e}") from None
        return cls(_obj(obj, source))

    @classmethod
    def load(cls, path: str) -> Spec:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CoveError(path, "no such file (is --bundle right?)") from None
        except OSError as e:
            raise CoveError(path, e.strerror or str(e)) from None
        return cls.parse(data, "config.json")
