"""The Container Device Interface (CDI): vendors' JSON or YAML specs in /etc/cdi and
/var/run/cdi that say what a device needs in a container (device nodes, mounts,
environment, hooks), named `vendor.com/class=name` (or `=all`). `cove run --device
vendor.com/class=name` and the annotation form CRI uses (`cdi.k8s.io/<key>:
vendor.com/class=a,vendor.com/class=b`) apply them to the OCI config here, as podman and
containerd do through the CDI library.

Specs are checked as the library checks them (spec versions 0.3.0-0.8.0, the version a
spec declares must be one that has the fields it uses, names as the spec defines them)
and an error names the spec file and the JSON path of the bad field
(`devices[0].containerEdits.deviceNodes[1].path`). A broken spec file does not hide the
devices of the others; asking for a device of its kind reports its error. Two spec files
of one directory defining the same device are a conflict, reported when that device is
asked for; a spec in /var/run/cdi overrides one in /etc/cdi (the library's priority:
the later directory wins). COVE_CDI_SPEC_DIRS (directories separated by ':') replaces
the default directories, as containers.conf's cdi_spec_dirs does for podman.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from cove.errors import CoveError

SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer",
              "poststart", "poststop")
ANNOTATION_PREFIX = "cdi.k8s.io/"

# the spec's name rules (pkg/parser): a vendor is a domain-like name, a class starts
# with a letter (dots allowed from 0.6.0), a device name starts with a letter (a digit
# from 0.5.0) and ends with a letter or digit
_VENDOR = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CLASS = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_DEVICE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_ENV = re.compile(r"^[^=\0]+=[^\0]*$")


def spec_dirs() -> list[str]:
    env = os.environ.get("COVE_CDI_SPEC_DIRS")
    return [d for d in env.split(":") if d] if env is not None else list(SPEC_DIRS)


def is_qualified(name: str) -> bool:
    """Whether a --device value is a CDI name rather than a host path."""
    return not name.startswith("/") and "=" in name and "/" in name.partition("=")[0]


def parse_qualified(name: str, what: str = "") -> tuple[str, str, str]:
    """`vendor.com/class=name` → (vendor, class, name); `all` is every device of the
    kind."""
    what = what or f"CDI device {name}"
    kind, eq, dev = name.partition("=")
    vendor, slash, cls = kind.partition("/")
    if not eq or not slash:
        raise CoveError(what, "expected a qualified CDI name vendor.com/class=name")
    if not _VENDOR.match(vendor):
        raise CoveError(what, f"invalid vendor {vendor!r}")
    if not _CLASS.match(cls):
        raise CoveError(what, f"invalid class {cls!r}")
    if not _DEVICE.match(dev):
        raise CoveError(what, f"invalid device name {dev!r}")
    return vendor, cls, dev


def names_from_annotations(annotations: dict[str, str]) -> list[str]:
    """The qualified names the `cdi.k8s.io/` annotations ask for (comma-separated
    values, as the CDI library's ParseAnnotations), each checked."""
    out: list[str] = []
    for key, value in sorted(annotations.items()):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        if not key[len(ANNOTATION_PREFIX):] or len(key) > 253:
            raise CoveError(f"annotation {key}", "expected cdi.k8s.io/<name>")
        for name in value.split(","):
            name = name.strip()
            parse_qualified(name, f"annotation {key}")
            if name not in out:
                out.append(name)
    return out


# -- loading and checking specs -------------------------------------------------------

@dataclass
class Spec:
    path: str
    priority: int       # the index of its directory: later ones win
    version: str
    kind: str
    devices: dict[str, dict[str, Any]]
    edits: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


class _Check:
    """Walks one spec, knowing the JSON path of where it is, noting the least spec
    version the fields it meets need."""

    def __init__(self, path: str) -> None:
        self.file = path
        self.needs = "0.3.0"

    def fail(self, where: str, why: str) -> CoveError:
        return CoveError(f"CDI spec {self.file}: {where}", why)

    def need(self, version: str) -> None:
        if _vtuple(version) > _vtuple(self.needs):
            self.needs = version

    def obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, "expected an object")
        return v

    def strs(self, v: Any, where: str) -> list[str]:
        if not isinstance(v, list):
            raise self.fail(where, "expected a list of strings")
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise self.fail(f"{where}[{i}]", "expected a string")
        return v

    def str_(self, d: dict[str, Any], key: str, where: str, required: bool = False) -> str:
        v = d.get(key)
        if v is None or v == "":
            if required:
                raise self.fail(f"{where}.{key}" if where else key, "required")
            return ""
        if not isinstance(v, str):
            raise self.fail(f"{where}.{key}" if where else key, "expected a string")
        return v

    def int_(self, d: dict[str, Any], key: str, where: str, lo: int = 0,
             hi: int = 2**32 - 1) -> int | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(f"{where}.{key}", f"expected an integer in {lo}-{hi}")
        return v

    def annotations(self, v: Any, where: str) -> dict[str, str]:
        d = self.obj(v, where)
        for k, x in d.items():
            if not isinstance(x, str):
                raise self.fail(f"{where}.{k}", "expected a string")
        if d:
            self.need("0.6.0")
        return d

    def edits(self, v: Any, where: str) -> dict[str, Any]:
        e = self.obj(v, where)
        known = {"env", "deviceNodes", "mounts", "hooks", "intelRdt", "additionalGids",
                 "netDevices"}
        for k in e:
            if k not in known:
                raise self.fail(f"{where}.{k}", "unknown field")
        if "netDevices" in e:
            raise self.fail(f"{where}.netDevices", "needs CDI 1.0 (cove reads 0.3-0.8)")
        for i, s in enumerate(self.strs(e.get("env") or [], f"{where}.env")):
            if not _ENV.match(s):
                raise self.fail(f"{where}.env[{i}]", f"{s!r} is not KEY=VALUE")
        for i, dn in enumerate(e.get("deviceNodes") or []):
            self.device_node(dn, f"{where}.deviceNodes[{i}]")
        if not isinstance(e.get("deviceNodes") or [], list):
            raise self.fail(f"{where}.deviceNodes", "expected a list")
        for i, m in enumerate(_list(self, e, "mounts", where)):
            w = f"{where}.mounts[{i}]"
            m = self.obj(m, w)
            self.str_(m, "hostPath", w, required=True)
            dst = self.str_(m, "containerPath", w, required=True)
            if not dst.startswith("/"):
                raise self.fail(f"{w}.containerPath", "must be an absolute path")
            self.strs(m.get("options") or [], f"{w}.options")
            if self.str_(m, "type", w):
                self.need("0.4.0")
        for i, h in enumerate(_list(self, e, "hooks", where)):
            w = f"{where}.hooks[{i}]"
            h = self.obj(h, w)
            name = self.str_(h, "hookName", w, required=True)
            if name not in HOOK_NAMES:
                raise self.fail(f"{w}.hookName", f"{name!r} is not one of "
                                                 f"{', '.join(HOOK_NAMES)}")
            if not self.str_(h, "path", w, required=True).startswith("/"):
                raise self.fail(f"{w}.path", "must be an absolute path")
            self.strs(h.get("args") or [], f"{w}.args")
            for j, s in enumerate(self.strs(h.get("env") or [], f"{w}.env")):
                if not _ENV.match(s):
                    raise self.fail(f"{w}.env[{j}]", f"{s!r} is not KEY=VALUE")
            self.int_(h, "timeout", w, 1, 2**31 - 1)
        if e.get("intelRdt") is not None:
            self.obj(e["intelRdt"], f"{where}.intelRdt")
            self.need("0.7.0")
        gids = e.get("additionalGids") or []
        if not isinstance(gids, list):
            raise self.fail(f"{where}.additionalGids", "expected a list of integers")
        for i, g in enumerate(gids):
            if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < 2**32:
                raise self.fail(f"{where}.additionalGids[{i}]", "expected a group id")
        if gids:
            self.need("0.7.0")
        return e

    def device_node(self, v: Any, where: str) -> None:
        dn = self.obj(v, where)
        path = self.str_(dn, "path", where, required=True)
        if not path.startswith("/"):
            raise self.fail(f"{where}.path", "must be an absolute path")
        if self.str_(dn, "hostPath", where):
            self.need("0.5.0")
            if not dn["hostPath"].startswith("/"):
                raise self.fail(f"{where}.hostPath", "must be an absolute path")
        typ = self.str_(dn, "type", where)
        if typ and typ not in ("b", "c", "u", "p"):
            raise self.fail(f"{where}.type", f"{typ!r} is not one of b, c, u, p")
        for k in ("major", "minor"):
            self.int_(dn, k, where, 0, 2**32 - 1)
        if typ == "p" and (dn.get("major") or dn.get("minor")):
            raise self.fail(f"{where}.major", "a fifo has no major or minor number")
        perms = self.str_(dn, "permissions", where)
        if perms and (set(perms) - set("rwm") or len(set(perms)) != len(perms)):
            raise self.fail(f"{where}.permissions", f"{perms!r} is not made of r, w, m")
        self.int_(dn, "fileMode", where, 0, 0o7777 | stat.S_IFMT(0o170000))
        self.int_(dn, "uid", where)
        self.int_(dn, "gid", where)


def _list(c: _Check, e: dict[str, Any], key: str, where: str) -> list[Any]:
    v = e.get(key) or []
    if not isinstance(v, list):
        raise c.fail(f"{where}.{key}", "expected a list")
    return v


def parse_spec(path: str, raw: Any, priority: int = 0) -> Spec:
    """A spec's document, checked; errors name the file and the field's path."""
    c = _Check(path)
    d = c.obj(raw, "(document)")
    for k in d:
        if k not in ("cdiVersion", "kind", "devices", "containerEdits", "annotations"):
            raise c.fail(k, "unknown field")
    version = c.str_(d, "cdiVersion", "", required=True)
    if version.lstrip("v") not in VERSIONS:
        raise c.fail("cdiVersion", f"{version!r} is not a version cove reads "
                                   f"({', '.join(VERSIONS)})")
    version = version.lstrip("v")
    kind = c.str_(d, "kind", "", required=True)
    vendor, slash, cls = kind.partition("/")
    if not slash or not _VENDOR.match(vendor) or not _CLASS.match(cls):
        raise c.fail("kind", f"{kind!r} is not vendor.com/class")
    if "." in cls:
        c.need("0.6.0")
    annotations = c.annotations(d.get("annotations") or {}, "annotations")
    edits = c.edits(d.get("containerEdits") or {}, "containerEdits")
    devs = d.get("devices")
    if not isinstance(devs, list) or not devs:
        raise c.fail("devices", "required: a list of at least one device")
    devices: dict[str, dict[str, Any]] = {}
    for i, dv in enumerate(devs):
        w = f"devices[{i}]"
        dv = c.obj(dv, w)
        for k in dv:
            if k not in ("name", "containerEdits", "annotations"):
                raise c.fail(f"{w}.{k}", "unknown field")
        name = c.str_(dv, "name", w, required=True)
        if not _DEVICE.match(name):
            raise c.fail(f"{w}.name", f"{name!r} is not a valid device name")
        if name[0].isdigit():
            c.need("0.5.0")
        if name in devices:
            raise c.fail(f"{w}.name", f"device {name!r} is defined twice")
        c.annotations(dv.get("annotations") or {}, f"{w}.annotations")
        if "containerEdits" not in dv:
            raise c.fail(f"{w}.containerEdits", "required")
        e = c.edits(dv["containerEdits"], f"{w}.containerEdits")
        if not any(e.get(k) for k in ("env", "deviceNodes", "mounts", "hooks", "intelRdt",
                                      "additionalGids")):
            raise c.fail(f"{w}.containerEdits", "a device needs at least one edit")
        devices[name] = e
    if _vtuple(c.needs) > _vtuple(version):
        raise c.fail("cdiVersion", f"{version} is too old for the fields this spec uses: "
                                   f"it needs at least {c.needs}")
    return Spec(path, priority, version, kind, devices, edits, annotations)


def read_spec(path: str, priority: int = 0) -> Spec:
    """One spec file: JSON (.json) or YAML (.yaml, .yml)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise CoveError(f"CDI spec {path}", e.strerror or str(e)) from None
    if path.endswith(".json"):
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise CoveError(f"CDI spec {path}", f"invalid JSON: {e}") from None
    else:
        import yaml  # lazily: only YAML specs need it
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise CoveError(f"CDI spec {path}", f"invalid YAML{at}") from None
    return parse_spec(path, raw, priority)


@dataclass
class Registry:
    """Every device of the spec directories, with what went wrong where."""
    devices: dict[str, tuple[Spec, dict[str, Any]]] = field(default_factory=dict)
    specs: list[Spec] = field(default_factory=list)
    errors: list[CoveError] = field(default_factory=list)
    broken_kinds: dict[str, CoveError] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def kinds(self) -> dict[str, Spec]:
        return {s.kind: s for s in self.specs}

    def resolve(self, name: str, what: str = "") -> list[tuple[str, Spec, dict[str, Any]]]:
        """The devices a qualified name stands for (`=all`: every device of the kind,
        unless the spec defines one named so)."""
        what = what or f"--device {name}"
        vendor, cls, dev = parse_qualified(name, what)
        kind = f"{vendor}/{cls}"
        if dev == "all" and name not in self.devices and name not in self.conflicts:
            # (a spec may define a device named `all` itself, as nvidia-ctk's do)
            hits = [(n, s, e) for n, (s, e) in sorted(self.devices.items())
                    if n.partition("=")[0] == kind]
            for n in self.conflicts:
                if n.partition("=")[0] == kind:
                    self._conflict(n, what)
            if hits:
                return hits
        elif name in self.conflicts:
            self._conflict(name, what)
        elif name in self.devices:
            s, e = self.devices[name]
            return [(name, s, e)]
        if kind in self.broken_kinds:
            raise CoveError(what, str(self.broken_kinds[kind]))
        dirs = ", ".join(spec_dirs())
        raise CoveError(what, f"no CDI spec defines it (looked in {dirs}"
                              + (f"; {len(self.errors)} spec(s) there are invalid: "
                                 "see `cove cdi list`" if self.errors else "") + ")")

    def _conflict(self, name: str, what: str) -> None:
        files = self.conflicts[name]
        raise CoveError(what, f"two CDI specs claim {name}: {' and '.join(files)}")


def _kind_of(path: str) -> str | None:
    """The `kind` of a spec that failed its checks, when it can be read at all (so that
    asking for one of its devices reports why it is broken)."""
    try:
        with open(path) as f:
            text = f.read()
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml
            raw = yaml.safe_load(text)
        kind = raw.get("kind") if isinstance(raw, dict) else None
        return kind if isinstance(kind, str) else None
    except Exception:  # unreadable: no kind to report it under
        return None


def load(dirs: list[str] | None = None) -> Registry:
    """The specs of the directories (in priority order: later wins)."""
    reg = Registry()
    owner: dict[str, Spec] = {}
    for prio, d in enumerate(dirs if dirs is not None else spec_dirs()):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for fn in names:
            if not fn.endswith((".json", ".yaml", ".yml")):
                continue
            p = os.path.join(d, fn)
            if not os.path.isfile(p):
                continue
            try:
                s = read_spec(p, prio)
            except CoveError as e:
                reg.errors.append(e)
                k = _kind_of(p)
                if k:
                    reg.broken_kinds.setdefault(k, e)
                continue
            reg.specs.append(s)
            for dev, edits in s.devices.items():
                q = f"{s.kind}={dev}"
                old = owner.get(q)
                if old is not None and old.priority == s.priority:
                    reg.conflicts.setdefault(q, [old.path]).append(p)
                    continue
                if old is not None:
                    reg.conflicts.pop(q, None)  # a later directory overrides
                owner[q] = s
                reg.devices[q] = (s, edits)
    return reg


# -- applying edits to an OCI config --------------------------------------------------

def apply(spec: dict[str, Any], names: list[str], reg: Registry | None = None,
          what: str = "--device") -> list[str]:
    """The devices `names` stand for, applied to the OCI config `spec`: each kind's
    spec-wide edits once, then each device's. Returns the devices applied."""
    if not names:
        return []
    reg = reg if reg is not None else load()
    chosen: list[tuple[str, Spec, dict[str, Any]]] = []
    for n in names:
        for hit in reg.resolve(n, f"{what} {n}"):
            if hit[0] not in [c[0] for c in chosen]:
                chosen.append(hit)
    edits: list[tuple[str, dict[str, Any]]] = []
    seen_specs: list[str] = []
    for q, s, e in chosen:
        if s.path not in seen_specs:
            seen_specs.append(s.path)
            if s.edits:
                edits.append((f"CDI spec {s.path}: containerEdits", s.edits))
        edits.append((f"CDI device {q}", e))
    from cove.engine.cdi_edits import apply_edits
    for where, e in edits:
        apply_edits(spec, e, where)
    return [q for q, _s, _e in chosen]


def describe(reg: Registry) -> list[str]:
    """`cove cdi list`: one qualified name a line."""
    kinds = sorted({n.partition("=")[0] for n in reg.devices})
    return sorted(reg.devices) + [f"{k}=all" for k in kinds if f"{k}=all" not in reg.devices]
