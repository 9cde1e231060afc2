"""A module imported when first used: `hashlib = lazy("hashlib")` at the top of a module
costs nothing until a function reads `hashlib.sha256`.

Why: `cove run` imports the image and engine modules to find its image and make the
container, but not what they need to pull, push or hash layers; hashlib (OpenSSL),
tarfile, ipaddress and the like were ~10 ms of every run's start-up. Type checkers see
the real import (under TYPE_CHECKING); at run time the name is this proxy.
"""

from __future__ import annotations

import sys


class _Lazy:
    __slots__ = ("_mod", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._mod: object = None

    def __getattr__(self, attr: str) -> object:
        mod = self._mod
        if mod is None:
            # through the import system, not sys.modules: a module another thread is
            # still importing is in sys.modules half made (its import lock waits)
            __import__(self._name)
            mod = self._mod = sys.modules[self._name]
        return getattr(mod, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> object:
    """A stand-in for module `name` that imports it on first attribute access."""
    return _Lazy(name)
