"""What a pull or a load wrote into the store, undone when it fails, and the one line
for an OSError while writing the store: shared by cove/image/transfer.py (registries)
and cove/image/archive.py (archives)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from cove.errors import CoveError, os_why
from cove.image import layers
from cove.image.store import Store


def local_error(what: str, e: OSError, store: Store) -> CoveError:
    """An OSError while writing the store, as one line."""
    why = os_why(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"no space left in the store ({store.root})"
    return CoveError(what, why)


@dataclass
class Track:
    """Blobs and snapshots a transfer created: removed again when it fails."""
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    def undo(self, store: Store) -> None:
        store.remove_new_blobs(self.blobs)
        _, diffs = store.referenced()
        for s in self.snapshots:
            if s not in diffs:
                layers.remove_tree(os.path.join(store.snapshot_dir, s.partition(":")[2]))
