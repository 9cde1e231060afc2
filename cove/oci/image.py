"""OCI image-spec / Docker schema 2 documents as typed objects: image configs, manifests,
indexes (manifest lists) and descriptors.

Every `parse` validates while it builds: an error is a `CoveError` whose `what` is the
JSON path (`config.Env[2]`, `layers[0].digest`) and whose `why` says what was wrong.
The stdlib `json` is fine here: only `cove` (never cove-runtime) reads images.
"""

from __future__ import annotations

import json
from typing import Any

from cove.errors import CoveError
from cove.oci.record import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import hashlib
else:
    from cove.lazy import lazy

    hashlib = lazy("hashlib")

# Media types.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
LAYER_COMPRESSION = {
    OCI_LAYER: "none", DOCKER_LAYER: "none",
    OCI_LAYER_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip", DOCKER_FOREIGN: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    # Non-distributable variants (deprecated, still seen).
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}

_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}


def _bad(path: str, why: str) -> CoveError:
    return CoveError(path, why)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(obj: dict[str, Any], key: str, typ: type, path: str, required: bool = False,
         default: Any = None) -> Any:
    v = obj.get(key)
    if v is None:
        if required:
            raise _bad(_join(path, key), "required field is missing")
        return default
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise _bad(_join(path, key), f"expected {_TYPE_NAMES[typ]}")
    return v


def _strlist(obj: dict[str, Any], key: str, path: str) -> list[str] | None:
    v = _get(obj, key, list, path)
    if v is None:
        return None
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise _bad(f"{_join(path, key)}[{i}]", "expected string")
    return list(v)


def _strset(obj: dict[str, Any], key: str, path: str) -> list[str]:
    """A JSON object used as a set (`Volumes`, `ExposedPorts`): its keys."""
    v = _get(obj, key, dict, path, default={})
    return sorted(v)


def _strmap(obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
    v = _get(obj, key, dict, path, default={})
    for k, s in v.items():
        if not isinstance(s, str):
            raise _bad(f"{_join(path, key)}.{k}", "expected string")
    return dict(v)


def check_digest(d: str, path: str = "digest") -> str:
    """A `sha256:<64 hex>` digest (the only algorithm Cove stores), or an error."""
    algo, sep, hexpart = d.partition(":")
    if not sep or algo != "sha256":
        raise _bad(path, f"unsupported digest {d!r}: expected sha256:<hex>")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise _bad(path, f"malformed digest {d!r}")
    return d


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def loads(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        v = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CoveError(what, f"malformed JSON: {e}") from None
    if not isinstance(v, dict):
        raise CoveError(what, "expected a JSON object")
    return v


@record
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, o: dict[str, Any], p: str) -> Platform:
        return cls(_get(o, "os", str, p, required=True),
                   _get(o, "architecture", str, p, required=True),
                   _get(o, "variant", str, p, default=""))

    @classmethod
    def from_string(cls, s: str) -> Platform:
        """`os/arch[/variant]`, as `--platform` takes it."""
        parts = s.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise CoveError("--platform", f"{s!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)

    def to_json(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d


@record
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, o: Any, p: str) -> Descriptor:
        if not isinstance(o, dict):
            raise _bad(p, "expected object")
        digest = check_digest(_get(o, "digest", str, p, required=True), _join(p, "digest"))
        size = _get(o, "size", int, p, required=True)
        if size < 0:
            raise _bad(_join(p, "size"), "must not be negative")
        plat = _get(o, "platform", dict, p)
        return cls(_get(o, "mediaType", str, p, required=True), digest, size,
                   Platform.parse(plat, _join(p, "platform")) if plat is not None else None,
                   _strmap(o, "annotations", p), _strlist(o, "urls", p) or [])

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                             "size": self.size}
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.urls:
            d["urls"] = list(self.urls)
        return d


@record
class Manifest:
    """An image manifest: OCI or Docker schema 2 (the same shape)."""
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any],
              media_type: str | None = None) -> Manifest:
        o = data if isinstance(data, dict) else loads(data, "manifest")
        ver = _get(o, "schemaVersion", int, "", required=True)
        if ver != 2:
            raise _bad("schemaVersion", f"unsupported schema version {ver} (need 2)")
        mt = _get(o, "mediaType", str, "") or media_type or OCI_MANIFEST
        if mt in INDEX_TYPES:
            raise _bad("mediaType", f"{mt} is an index, not an image manifest")
        if mt not in MANIFEST_TYPES:
            raise _bad("mediaType", f"unsupported manifest type {mt!r}")
        config = Descriptor.parse(_get(o, "config", dict, "", required=True), "config")
        layers_raw = _get(o, "layers", list, "", required=True)
        layers = [Descriptor.parse(x, f"layers[{i}]") for i, x in enumerate(layers_raw)]
        for i, lay in enumerate(layers):
            if lay.media_type not in LAYER_COMPRESSION:
                raise _bad(f"layers[{i}].mediaType",
                           f"unsupported layer type {lay.media_type!r}")
        return cls(mt, config, layers, _strmap(o, "annotations", ""))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                             "config": self.config.to_json(),
                             "layers": [x.to_json() for x in self.layers]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode()


@record
class Index:
    """An OCI image index or Docker manifest list."""
    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any], media_type: str | None = None) -> Index:
        o = data if isinstance(data, dict) else loads(data, "index")
        ver = _get(o, "schemaVersion", int, "", required=True)
        if ver != 2:
            raise _bad("schemaVersion", f"unsupported schema version {ver} (need 2)")
        mt = _get(o, "mediaType", str, "") or media_type or OCI_INDEX
        if mt not in INDEX_TYPES:
            raise _bad("mediaType", f"{mt!r} is not an index")
        raw = _get(o, "manifests", list, "", required=True)
        return cls(mt, [Descriptor.parse(x, f"manifests[{i}]") for i, x in enumerate(raw)],
                   _strmap(o, "annotations", ""))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                             "manifests": [x.to_json() for x in self.manifests]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode()

    def select(self, want: Platform) -> Descriptor:
        """The manifest for `want`; a missing variant matches any (the first listed)."""
        cands = [d for d in self.manifests if d.platform is not None
                 and d.platform.os == want.os and d.platform.architecture == want.architecture]
        exact = [d for d in cands if d.platform is not None
                 and (not want.variant or d.platform.variant == want.variant)]
        if exact:
            return exact[0]
        loose = [d for d in cands if d.platform is not None and not d.platform.variant]
        if loose:
            return loose[0]
        have = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
        raise CoveError(f"platform {want}", f"not in the image index (it has: {have})")


def is_index(data: bytes, media_type: str | None = None) -> bool:
    """Whether a manifest document is an index, from its media type or its shape."""
    if media_type in INDEX_TYPES:
        return True
    if media_type in MANIFEST_TYPES:
        return False
    try:
        o = json.loads(data)
    except ValueError:
        return False
    return isinstance(o, dict) and (o.get("mediaType") in INDEX_TYPES
                                    or ("manifests" in o and "layers" not in o))


def manifest_media_type(data: bytes) -> str:
    """The media type a manifest document declares (or its shape implies)."""
    o = loads(data, "manifest")
    mt = o.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    return OCI_INDEX if "manifests" in o and "layers" not in o else OCI_MANIFEST


@record
class ContainerConfig:
    """The `config` object of an image config: how to run the image."""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    volumes: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    @classmethod
    def parse(cls, o: dict[str, Any], p: str) -> ContainerConfig:
        c = cls(entrypoint=_strlist(o, "Entrypoint", p), cmd=_strlist(o, "Cmd", p),
                env=_strlist(o, "Env", p) or [],
                working_dir=_get(o, "WorkingDir", str, p, default=""),
                user=_get(o, "User", str, p, default=""),
                volumes=_strset(o, "Volumes", p),
                exposed_ports=_strset(o, "ExposedPorts", p),
                labels=_strmap(o, "Labels", p),
                stop_signal=_get(o, "StopSignal", str, p, default=""))
        for i, e in enumerate(c.env):
            if "=" not in e:
                raise _bad(f"{p}.Env[{i}]", f"{e!r} is not KEY=VALUE")
        if c.working_dir and not c.working_dir.startswith("/"):
            raise _bad(f"{p}.WorkingDir", f"must be an absolute path, not {c.working_dir!r}")
        return c

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.entrypoint is not None:
            d["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            d["Cmd"] = self.cmd
        if self.env:
            d["Env"] = self.env
        if self.working_dir:
            d["WorkingDir"] = self.working_dir
        if self.user:
            d["User"] = self.user
        if self.volumes:
            d["Volumes"] = {v: {} for v in self.volumes}
        if self.exposed_ports:
            d["ExposedPorts"] = {v: {} for v in self.exposed_ports}
        if self.labels:
            d["Labels"] = self.labels
        if self.stop_signal:
            d["StopSignal"] = self.stop_signal
        return d


@record
class ImageConfig:
    """An image config blob (OCI `application/vnd.oci.image.config.v1+json` or Docker's)."""
    os: str
    architecture: str
    variant: str
    config: ContainerConfig
    diff_ids: list[str]
    created: str = ""
    author: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any]) -> ImageConfig:
        o = data if isinstance(data, dict) else loads(data, "image config")
        rootfs = _get(o, "rootfs", dict, "", required=True)
        rtype = _get(rootfs, "type", str, "rootfs", required=True)
        if rtype != "layers":
            raise _bad("rootfs.type", f"expected \"layers\", not {rtype!r}")
        ids = _strlist(rootfs, "diff_ids", "rootfs")
        if ids is None:
            raise _bad("rootfs.diff_ids", "required field is missing")
        for i, d in enumerate(ids):
            check_digest(d, f"rootfs.diff_ids[{i}]")
        hist = _get(o, "history", list, "", default=[])
        for i, h in enumerate(hist):
            if not isinstance(h, dict):
                raise _bad(f"history[{i}]", "expected object")
        return cls(os=_get(o, "os", str, "", required=True),
                   architecture=_get(o, "architecture", str, "", required=True),
                   variant=_get(o, "variant", str, "", default=""),
                   config=ContainerConfig.parse(_get(o, "config", dict, "", default={}),
                                                "config"),
                   diff_ids=ids, created=_get(o, "created", str, "", default=""),
                   author=_get(o, "author", str, "", default=""), history=list(hist))

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.created:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        d["config"] = self.config.to_json()
        d["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        if self.history:
            d["history"] = self.history
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode()
