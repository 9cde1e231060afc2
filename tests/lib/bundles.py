"""OCI bundles for the runtime tests: a busybox rootfs copied from one per session, and
a config from runc's default spec (as crun's tests start from a base config dict)."""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from cove.image.busybox import build_rootfs
from cove.oci.defaults import default_spec

_TEMPLATE_ROOTFS: Path | None = None


def template_rootfs(base: Path) -> Path:
    """One busybox rootfs per session; bundles get a copy (cheap: one binary + links)."""
    global _TEMPLATE_ROOTFS
    if _TEMPLATE_ROOTFS is None or not _TEMPLATE_ROOTFS.exists():
        _TEMPLATE_ROOTFS = Path(build_rootfs(str(base / "busybox-rootfs")))
    return _TEMPLATE_ROOTFS


def base_config(args: list[str] | None = None) -> dict[str, Any]:
    """runc's default spec, non-interactive, running `args`."""
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args or ["true"]
    spec["root"]["readonly"] = False
    return spec


def new_id(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Bundle:
    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))


def make_bundle(tmp: Path, config: dict[str, Any] | None = None, name: str = "bundle") -> Bundle:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template_rootfs(tmp.parent), path / "rootfs", symlinks=True)
    b = Bundle(path, copy.deepcopy(config) if config else base_config())
    b.write()
    return b
