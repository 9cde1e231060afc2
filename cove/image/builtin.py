"""The built-in default image, `localhost/busybox:latest`: a real OCI image built offline
from Debian's busybox-static (cove.image.busybox) through the import path."""

from __future__ import annotations

import fcntl
import os

from cove.errors import CoveError
from cove.image import reference
from cove.image.store import Store

NAME = "localhost/busybox:latest"


def is_builtin(ref: str) -> bool:
    try:
        return NAME in reference.local_candidates(ref)
    except CoveError:
        return False


def ensure_busybox(store: Store) -> str:
    """The built-in image's digest, building and importing it when missing. (The
    import machinery is imported here, when needed: `is_builtin` is on `cove run`'s
    path, and the registry client that comes with it costs ~75 ms to import.)"""
    from cove.image.assemble import import_rootfs, tar_directory
    from cove.image.busybox import build_rootfs
    from cove.oci.image import ContainerConfig
    fd = os.open(os.path.join(store.root, "builtin.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return store.resolve(NAME)
        except CoveError:
            pass
        import tempfile
        with tempfile.TemporaryDirectory(dir=store.tmp_dir) as tmp:
            rootfs = build_rootfs(os.path.join(tmp, "rootfs"))
            tar = os.path.join(tmp, "rootfs.tar")
            tar_directory(rootfs, tar)
            env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            return import_rootfs(store, tar, NAME, config=ContainerConfig(cmd=["sh"], env=env))
    finally:
        os.close(fd)
