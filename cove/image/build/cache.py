"""The build cache: what a step made, keyed by what determines it.

A step's key is the digest of its parent's key, its instruction (after ARG/ENV
substitution), the build args in effect and, for COPY/ADD, the content digests of the
files it copies. Its entry is what the step produced: the layer (descriptor and
diffID, a blob in the content store) or nothing for a config-only step, and the time
it was made (so that an unchanged rebuild gives the very same image, id included).

Entries live in `<store>/build-cache/<key hex>.json`; a layer they name is a blob like
any other, so `image prune` (the store's gc) removes those no image uses, and a lookup
whose blob is gone is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from cove.image.store import Store
from cove.oci.image import Descriptor


def key(*parts: object) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + h.hexdigest()


@dataclass
class Entry:
    created: str
    layer: Descriptor | None = None
    diff_id: str = ""


class Cache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir = os.path.join(store.root, "build-cache")

    def _path(self, k: str) -> str:
        return os.path.join(self.dir, k.partition(":")[2] + ".json")

    def get(self, k: str) -> Entry | None:
        try:
            with open(self._path(k)) as f:
                o: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            return None
        try:
            if o.get("layer"):
                desc = Descriptor.parse(o["layer"], "layer")
                if not self.store.has_blob(desc.digest):
                    return None
                return Entry(str(o["created"]), desc, str(o["diff_id"]))
            return Entry(str(o["created"]))
        except Exception:
            return None

    def put(self, k: str, e: Entry) -> None:
        os.makedirs(self.dir, exist_ok=True)
        o: dict[str, Any] = {"created": e.created}
        if e.layer is not None:
            o["layer"], o["diff_id"] = e.layer.to_json(), e.diff_id
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(o, f)
        os.replace(tmp, self._path(k))
