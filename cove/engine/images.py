"""Finding a container's image: the local store, else the built-in busybox, else a pull."""

from __future__ import annotations

from cove.errors import CoveError
from cove.image.store import Store


def find_image(st: Store, ref: str, opts: object = None, quiet: bool = True) -> str:
    """The image's digest. `opts` is a `cove.image.transfer.RegistryOptions` for a pull
    (or a function that makes one: only a pull pays for the registry client's import)."""
    try:
        return st.resolve(ref)
    except CoveError:
        pass
    from cove.image import builtin
    if builtin.is_builtin(ref):
        return builtin.ensure_busybox(st)
    from cove.image import progress
    from cove.image.transfer import RegistryOptions, pull
    if callable(opts):
        opts = opts()
    if opts is None:
        opts = RegistryOptions()
    assert isinstance(opts, RegistryOptions)
    return pull(st, ref, opts=opts, progress=progress.choose(quiet))
