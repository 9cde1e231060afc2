"""`Image` and `client.images`: get, list, pull, build, tag."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

from cove.engine.pyapi.common import Described, api_errors, filter_values
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.client import Client


class Image(Described):
    """An image of the store: `attrs` (Id, RepoTags, RepoDigests, Created, Size, Os,
    Architecture, Config), `id` (the digest `cove images` shows), `tags`."""

    SHORT = 19  # sha256: and 12 hex digits, as docker-py

    def __repr__(self) -> str:
        return f"<Image: {', '.join(repr(t) for t in self.tags)}>"

    @property
    def tags(self) -> builtins.list[str]:
        return builtins.list(self.attrs["RepoTags"])

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.attrs.get("Config") or {}).get("Labels") or {})

    def reload(self) -> None:
        self.attrs = self.client.images.get(self.id).attrs

    def tag(self, repository: str, tag: str | None = None) -> bool:
        """Give it another name (`repository:tag`)."""
        from cove.image.store import Store
        with api_errors():
            Store(self.client.root).tag(self.id, f"{repository}:{tag}" if tag else repository)
        self.reload()
        return True


def _image_attrs(root: str, digest: str) -> dict[str, Any]:
    import json

    from cove.image.store import Store
    st = Store(root)
    img = st.image(digest)
    raw = json.loads(img.config_raw)
    return {"Id": digest, "RepoTags": [n for n in img.names if "@" not in n],
            "RepoDigests": [n for n in img.names if "@" in n],
            "Created": img.config.created, "Size": img.size,
            "Architecture": img.config.architecture, "Os": img.config.os,
            "Config": raw.get("config") or {}, "ManifestDigest": img.digest}


class ImageCollection:
    """`client.images`: get, list, pull."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Image:
        """By name, digest, or a unique prefix of its id (ImageNotFound if none)."""
        from cove.image.store import Store
        root = self.client.root
        with api_errors():
            digest = Store(root).resolve(name)
            return Image(_image_attrs(root, digest), self.client)

    def list(self, name: str | None = None, all: bool = False,
             filters: dict[str, Any] | None = None) -> builtins.list[Image]:
        """The store's images, newest first; `name` a repository (or repository:tag);
        filters: dangling, reference (a glob), label."""
        import fnmatch

        from cove.image.store import Store
        root = self.client.root
        out = []
        for rec in sorted(Store(root).records(), key=lambda r: -r.created):
            try:
                attrs = _image_attrs(root, rec.digest)
            except CoveError:
                continue
            tags = attrs["RepoTags"]
            if name and not any(t == name or t.rpartition(":")[0] == name or
                                t.rpartition(":")[0].rpartition("/")[2] == name
                                for t in tags):
                continue
            ok = True
            for key, vals in (filters or {}).items():
                got = filter_values(key, vals)
                if key == "dangling":
                    ok = ok and (not tags) == (got[0] in ("true", "1"))
                elif key == "reference":
                    ok = ok and any(fnmatch.fnmatch(t, p) or fnmatch.fnmatch(
                        t.rpartition(":")[0], p) for t in tags for p in got)
                elif key == "label":
                    labels = attrs["Config"].get("Labels") or {}
                    ok = ok and builtins.all(k in labels and (not eq or labels[k] == v)
                                    for k, eq, v in (p.partition("=") for p in got))
                else:
                    raise TypeError(f"images.list(): filters: {key!r}: cove filters by "
                                    "dangling, reference and label")
            if ok:
                out.append(Image(attrs, self.client))
        return out

    def pull(self, repository: str, tag: str | None = None, all_tags: bool = False,
             **kwargs: Any) -> Image:
        """Pull `repository[:tag]` (latest by default) from its registry; `platform`
        ("os/arch[/variant]"), `auth_config` ({"username", "password"}) as docker-py."""
        from cove.image import progress
        from cove.image.store import Store
        from cove.image.transfer import RegistryOptions, pull
        from cove.oci.image import Platform
        if all_tags:
            raise TypeError("images.pull(): all_tags: not supported by cove")
        bad = sorted(set(kwargs) - {"platform", "auth_config", "stream", "decode"})
        if bad:
            raise TypeError(f"images.pull() got an unexpected keyword argument {bad[0]!r}")
        plat = kwargs.get("platform")
        if plat is not None and not isinstance(plat, str):
            raise TypeError(f"images.pull(): platform: expected 'os/arch', got {plat!r}")
        opts = RegistryOptions()
        auth = kwargs.get("auth_config")
        if auth:
            if not isinstance(auth, dict) or not {"username", "password"} <= set(auth):
                raise TypeError("images.pull(): auth_config: expected {'username': ..., "
                                "'password': ...}")
            opts.creds = (str(auth["username"]), str(auth["password"]))
        ref = repository
        if tag:
            ref += ("@" if tag.startswith("sha256:") else ":") + tag
        root = self.client.root
        with api_errors():
            digest = pull(Store(root), ref, opts=opts, progress=progress.choose(True),
                          platform=Platform.from_string(plat) if plat else None)
        return self.get(digest)

    def build(self, path: str | None = None, tag: str | None = None, *,
              dockerfile: str | None = None, buildargs: dict[str, str] | None = None,
              target: str | None = None, nocache: bool = False, pull: bool = False,
              labels: dict[str, str] | None = None, network_mode: str | None = None,
              platform: str | None = None, fileobj: Any = None, quiet: bool = False,
              **kwargs: Any) -> tuple[Image, Iterator[dict[str, Any]]]:
        """Build an image from a directory (`path`) or a tar context (`fileobj`), as
        docker-py: returns (image, the build's log as {"stream": line} dicts). Options
        docker-py has and cove has no use for (rm, forcerm, timeout...) are accepted."""
        from cove.image.build.builder import Options
        from cove.image.build.builder import build as do_build
        from cove.image.store import Store
        bad = sorted(set(kwargs) - {"rm", "forcerm", "timeout", "encoding", "decode",
                                    "custom_context", "use_config_proxy", "isolation"})
        if bad:
            raise TypeError(f"images.build() got an unexpected keyword argument {bad[0]!r}")
        if path is None and fileobj is None:
            raise TypeError("images.build(): give path or fileobj")
        log: builtins.list[dict[str, Any]] = []
        opts = Options(context=path if path is not None else "-", dockerfile=dockerfile,
                       tags=[tag] if tag else [], build_args=dict(buildargs or {}),
                       target=target, no_cache=nocache, pull=pull,
                       labels=dict(labels or {}),
                       network="host" if network_mode == "host" else "none",
                       platform=platform, stdin=fileobj)
        with api_errors():
            res = do_build(Store(self.client.root), opts,
                           lambda line: log.append({"stream": line + "\n"}))
        log.append({"aux": {"ID": res.image_id}})
        return self.get(res.digest), iter(log)
