"""Image references: `busybox`, `127.0.0.1:5000/a/b:tag`, `name@sha256:...`, normalised
as docker does (`busybox` → `docker.io/library/busybox:latest`).
"""

from __future__ import annotations

from cove.errors import CoveError
from cove.oci.image import check_digest
from cove.oci.record import frozen_record

DEFAULT_REGISTRY = "docker.io"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-/")
_TAG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@frozen_record
class Reference:
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the registry API takes after /manifests/: the digest, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, "")

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def has_registry(self) -> bool:
        return True


def _is_registry(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse(ref: str, default_registry: str = DEFAULT_REGISTRY) -> Reference:
    """Parse and normalise an image reference; errors name it."""
    s = ref.strip()
    if not s:
        raise CoveError("image reference", "empty")
    digest = ""
    if "@" in s:
        s, _, digest = s.partition("@")
        check_digest(digest, f"image reference {ref!r}")
    first, slash, rest = s.partition("/")
    if slash and _is_registry(first):
        registry, path = first, rest
    else:
        registry, path = default_registry, s
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not tag or not set(tag) <= _TAG_CHARS or len(tag) > 128:
            raise CoveError(f"image reference {ref!r}", f"invalid tag {tag!r}")
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if registry == "index.docker.io":
        registry = "docker.io"
    if not path or not set(path) <= _NAME_CHARS or path.startswith("/") or "//" in path \
            or path.endswith("/"):
        raise CoveError(f"image reference {ref!r}",
                        "invalid repository name (lowercase letters, digits, . _ - /)")
    if not tag and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def has_explicit_registry(ref: str) -> bool:
    first, slash, _ = ref.partition("/")
    return bool(slash) and _is_registry(first)


def search_registries(root: str | None = None) -> list[str]:
    """The registries a short name is tried against, in order, as podman reads them:
    `unqualified-search-registries` from `$COVE_REGISTRIES_CONF`, else
    `<root>/registries.conf`, else `/etc/containers/registries.conf`; `docker.io` when
    none of them exists (or names none)."""
    import os
    import tomllib
    env = os.environ.get("COVE_REGISTRIES_CONF")
    if env:
        files = [env]
    else:
        files = [os.path.join(root, "registries.conf")] if root else []
        files.append("/etc/containers/registries.conf")
    for path in files:
        try:
            with open(path, "rb") as fh:
                conf = tomllib.load(fh)
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CoveError(f"registries config {path}", str(e)) from None
        regs = conf.get("unqualified-search-registries")
        if regs is None:
            continue
        if not isinstance(regs, list) or not all(isinstance(x, str) and x for x in regs):
            raise CoveError(f"registries config {path}",
                            "unqualified-search-registries must be a list of host names")
        return list(regs)
    return [DEFAULT_REGISTRY]


def local_candidates(ref: str, registries: list[str] | None = None) -> list[str]:
    """Names to try in the local store for what a user typed: a short name matches
    `localhost/NAME` (imported, built-in) before NAME in each search registry
    (`docker.io/library/NAME` by default)."""
    r = parse(ref)
    if has_explicit_registry(ref):
        return [str(r)]
    out = [str(parse(ref, default_registry="localhost"))]
    for reg in registries if registries is not None else [DEFAULT_REGISTRY]:
        c = str(parse(ref, default_registry=reg))
        if c not in out:
            out.append(c)
    return out


def pull_candidates(ref: str, registries: list[str]) -> list[str]:
    """The full references a pull of `ref` tries, in order (a short name: each search
    registry's)."""
    if has_explicit_registry(ref):
        return [str(parse(ref))]
    return list(dict.fromkeys(str(parse(ref, default_registry=reg)) for reg in registries))
