"""What is left to undo when a container's run ends (its network, its rootfs mount, a
rename done while it ran): the monitor's steps after an exit, and `ps`/`inspect` when
they correct a record nobody finished.
"""

from __future__ import annotations

import os
import sys

from cove.engine import state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def cleanup(paths: state.Paths, name: str, rec: Mapping[str, Any]) -> None:
    """After a run: the network torn down, the rootfs unmounted (kept for a restart).
    Without the image modules (60 ms to import): the overlay is one umount."""
    if rec.get("HostConfig", {}).get("NetworkMode") not in ("host", "none"):
        try:
            from cove.engine import network
            network.detach(paths, name)
        except Exception as e:
            print(f"network detach {name}: {e}", file=sys.stderr, flush=True)
    from cove.sys import libc
    merged = os.path.join(paths.cdir(name), "merged")
    for flags in (0, 2):  # then MNT_DETACH, if busy
        try:
            libc.umount2(merged, flags)
            break
        except OSError as e:
            if e.errno != 16:  # EBUSY; EINVAL: not mounted (a copied rootfs)
                break
    settle_rename(paths, name)


def current_name(cdir: str, name: str) -> str:
    """The container's name now: `cove rename` may have renamed it while it ran (its
    old directory is then a symlink to the new one)."""
    rec = state.load_record(cdir)
    new = rec.get("Name") if rec else None
    return new if isinstance(new, str) and new and new != name \
        and os.path.isdir(os.path.join(os.path.dirname(cdir), new)) else name


def settle_rename(paths: state.Paths, name: str) -> None:
    """Finish a rename done while the container ran (cove/engine/ops.py): its log file
    still has the old name (`NAME-json.log` is a symlink to it) and the old directory
    is a symlink to this one. Once the run is over, both take the new name."""
    cdir = paths.cdir(name)
    dst = os.path.join(cdir, name + "-json.log")
    try:
        target = os.readlink(dst)
    except OSError:
        return
    old = target[:-len("-json.log")] if target.endswith("-json.log") else ""
    os.unlink(dst)
    src = os.path.join(cdir, target)
    i = 0
    while os.path.lexists(f"{src}.{i}" if i else src):
        os.rename(f"{src}.{i}" if i else src, f"{dst}.{i}" if i else dst)
        i += 1
    alias = paths.cdir(old) if old and "/" not in old else ""
    try:
        if alias and os.readlink(alias) == name:
            os.unlink(alias)
    except OSError:
        pass
