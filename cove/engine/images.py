"""Finding a container's image: the local store, else the built-in busybox, else a pull."""

from __future__ import annotations

from collections.abc import Callable

from cove.engine import events
from cove.errors import CoveError
from cove.image.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry client: only a pull pays for its import
    from cove.image.transfer import RegistryOptions

PULL_POLICIES = ("missing", "always", "never")


def find_image(st: Store, ref: str,
               opts: RegistryOptions | Callable[[], RegistryOptions] | None = None,
               quiet: bool = True, pull: str = "missing",
               platform: str | None = None) -> str:
    """The image's digest. `opts` are the registry options of a pull, or a function
    that makes them (only a pull pays for the registry client's import).
    `pull` is docker's --pull: `missing` pulls only an image that is not here (or not
    for `platform`), `always` pulls every time, `never` never does (the built-in
    busybox is made locally in any case)."""
    if pull not in PULL_POLICIES:
        raise CoveError(f"--pull {pull}", "expected always, missing or never")
    from cove.image import builtin
    if pull != "always" or builtin.is_builtin(ref):
        try:
            digest = st.resolve(ref)
            if pull == "never" or not platform or _is_for(st, digest, platform):
                return digest
        except CoveError:
            if pull == "never" and not builtin.is_builtin(ref):
                raise CoveError(f"image {ref}", "no such image in the local store, and "
                                                "--pull never") from None
        if builtin.is_builtin(ref):
            return builtin.ensure_busybox(st)
    from cove.image import progress
    from cove.image.transfer import RegistryOptions
    from cove.image.transfer import pull as do_pull
    from cove.oci.image import Platform
    if callable(opts):
        opts = opts()
    if opts is None:
        opts = RegistryOptions()
    digest = do_pull(st, ref, opts=opts, progress=progress.choose(quiet),
                     platform=Platform.from_string(platform) if platform else None)
    events.emit(st.root, "image", "pull", ref, name=ref)
    return digest


def _is_for(st: Store, digest: str, platform: str) -> bool:
    """Whether the stored image is (or, an index, has) one for `platform`."""
    from cove.oci.image import Platform
    want = Platform.from_string(platform)
    try:
        cfg = st.image(digest, want).config
    except CoveError:
        return False
    return (cfg.os, cfg.architecture) == (want.os, want.architecture) and \
        (not want.variant or cfg.variant == want.variant)
