"""cove-runtime's start-up and exit: its own modules from one cache file, no teardown.

Python's start-up is most of the runtime's cost, and a good part of that is the import
system walking sys.path for every module: stat the directory, list it, stat the
source, open and read its .pyc, check the header, in pure Python (~100 us and ~10
system calls a module, ~40 modules on the path of `run`). The launcher of
`cove-runtime` (cove.cli.launcher) calls `main()` here, which puts one finder first
on sys.meta_path that serves Cove's modules from a single file per verb,
`cove/__pycache__/hotpath.<cache tag>.<verb>.bin`: the code of each module (the same
bytecode as its .pyc) with the source's path, size and mtime in nanoseconds. A module
is served only while its source still has that size and mtime (one stat, as Python's
own .pyc check, and stricter: nanoseconds), so an edited module is imported the usual
way and the cache rewritten at exit. The file is read only when owned by root or the
caller and writable by no one else (the trust of the .pyc files beside it), and only
for this interpreter's bytecode (the .pyc magic number and a format tag).

A verb's cache holds every module a run of that verb imported (from Cove and the
standard library; a union over its runs, so its rarer branches join after their first
use): whatever missed is added when the process exits. One file per verb keeps each
read to what that verb needs (~0.4 MB for `run`; all verbs together are ~1.7 MB).
Nothing else changes: a module not in the cache, or a cache that cannot be read or
written (a read-only tree, another user), is imported as always.

At exit, `main()` flushes stdout and stderr and ends the process with os._exit: the
interpreter's teardown (freeing every module, running the GC) costs ~1-3 ms and the
runtime leaves nothing for it to do (its files are closed, its children reaped or
handed on). An exception other than the CLI's own errors still gets Python's traceback.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

_FORMAT = "cove-hotpath-2"
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../cove
# The standard library's directory: its pure modules on the path (ctypes, struct,
# types, __future__) are served the same way, its extension modules (_ctypes, _json)
# found without the walk of sys.path.
_STDLIB = os.path.dirname(os.__file__ or "") or "/nonexistent"
# The global flags of cove-runtime that take a value (cove.cli.runtime.GLOBAL): skipped
# to find the verb that names the cache file.
_VALUED = frozenset({"--root", "--log", "--log-format", "--rootless", "--criu"})


def cache_path(argv: list[str]) -> str:
    """The cache file of the verb in `argv` (the first word that is not a global flag
    or its value; "none" without one). A wrong guess only costs speed."""
    verb = "none"
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            i += 2 if a in _VALUED else 1
            continue
        verb = a if len(a) <= 16 and a.replace("-", "").isalpha() else "other"
        break
    return os.path.join(_PKG, "__pycache__",
                        f"hotpath.{sys.implementation.cache_tag}.{verb}.bin")

# name -> (source path, mtime_ns, size, is package, marshalled code; empty for an
# extension module). The code is a slice of the file as read, not a copy.
Entry = tuple[str, int, int, bool, bytes | memoryview]


def _magic() -> bytes:
    ext = sys.modules["_frozen_importlib_external"]
    magic: bytes = ext.MAGIC_NUMBER
    return magic


class HotFinder:
    """A meta path finder and loader for the modules in the cache (see the module's
    docstring)."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        self._spec_type = sys.modules["_frozen_importlib"].ModuleSpec
        self._ext_loader = sys.modules["_frozen_importlib_external"].ExtensionFileLoader
        # Imported before this finder: never asked of it, not worth a cache entry.
        self.before = frozenset(sys.modules)
        self.served: set[str] = set()
        self._tag = sys.implementation.cache_tag

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> Any:
        e = self.entries.get(name)
        if e is None:
            return None
        origin, mtime, size, is_pkg, code = e
        try:
            st = os.stat(origin)
        except OSError:
            return None
        if st.st_mtime_ns != mtime or st.st_size != size:
            return None  # edited: the usual import, and a new cache at exit
        self.served.add(name)
        if not code:
            spec = self._spec_type(name, self._ext_loader(name, origin), origin=origin)
            spec.has_location = True
            return spec
        spec = self._spec_type(name, self, origin=origin, is_package=is_pkg)
        spec.has_location = True
        # __cached__ as cache_from_source makes it (-IS: no optimisation level, no
        # pycache prefix), without its cost per module.
        head, _, tail = origin.rpartition("/")
        spec.cached = f"{head}/__pycache__/{tail[:-3]}.{self._tag}.pyc"
        if is_pkg:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        spec.loader_state = code
        return spec

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        spec: Any = module.__spec__
        exec(marshal.loads(spec.loader_state), module.__dict__)


def load(path: str) -> dict[str, Entry]:
    """The cache's entries, or {} when it is missing, foreign or of another format.

    The file: 4 bytes (the index's length), the index (marshal: format tag, magic
    number, name -> source path, mtime_ns, size, is package, offset, length), then the
    modules' code. Read in one call into one buffer (each page touched once, no copy
    per module: a forked child shares them untouched)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022 or st.st_size < 4:
            return {}
        buf = bytearray(st.st_size)
        if os.readv(fd, [buf]) != st.st_size:
            return {}
    except OSError:
        return {}
    finally:
        os.close(fd)
    view = memoryview(buf)
    n = int.from_bytes(view[:4], "little")
    try:
        fmt, magic, index = marshal.loads(view[4:4 + n])
        if fmt != _FORMAT or magic != _magic() or not isinstance(index, dict):
            return {}
        base = 4 + n
        return {name: (origin, mtime, size, is_pkg, view[base + off:base + off + length])
                for name, (origin, mtime, size, is_pkg, off, length) in index.items()}
    except (ValueError, EOFError, TypeError):
        return {}


def _code_of(mod: ModuleType) -> Entry | None:
    """The entry of a module imported from its source: the bytes of its .pyc when that
    matches the source as it is now, else compiled afresh."""
    spec = getattr(mod, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if not isinstance(origin, str) or not (origin.startswith(_PKG + os.sep) or
                                           origin.startswith(_STDLIB + os.sep)):
        return None
    try:
        st = os.stat(origin)
        if origin.endswith(".so"):
            return (origin, st.st_mtime_ns, st.st_size, False, b"")
        if not origin.endswith(".py"):
            return None
        code = b""
        cached = getattr(mod, "__cached__", None)
        if cached:
            try:
                with open(cached, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            if (len(data) > 16 and data[:4] == _magic()
                    and int.from_bytes(data[4:8], "little") == 0
                    and int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                    and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF):
                code = data[16:]
        if not code:
            with open(origin, "rb") as f:
                source = f.read()
            if len(source) != st.st_size:
                return None  # changing under us: next time
            code = marshal.dumps(compile(source, origin, "exec", dont_inherit=True))
    except (OSError, SyntaxError, ValueError):
        return None
    is_pkg = os.path.basename(origin) == "__init__.py"
    return (origin, st.st_mtime_ns, st.st_size, is_pkg, code)


def save(finder: HotFinder, path: str) -> bool:
    """Write the cache again when a Cove module was imported around it; True if done.

    Only the modules of this tree, and only as root (or the tree's owner): the file
    is written next to the .pyc files, atomically (a private name, then rename)."""
    entries = dict(finder.entries)
    changed = False
    for name, mod in list(sys.modules.items()):
        if name in finder.before or name in finder.served:
            continue
        entry = _code_of(mod)
        if entry is not None:
            entries[name] = entry
            changed = True
    if not changed:
        return False
    # Modules since removed from the tree leave with this rewrite.
    entries = {k: e for k, e in entries.items() if os.path.exists(e[0])}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, dump(entries))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def dump(entries: dict[str, Entry]) -> bytes:
    """The file load() reads."""
    index: dict[str, tuple[str, int, int, bool, int, int]] = {}
    blobs: list[bytes] = []
    off = 0
    for name, (origin, mtime, size, is_pkg, code) in entries.items():
        index[name] = (origin, mtime, size, is_pkg, off, len(code))
        blobs.append(bytes(code))
        off += len(code)
    head = marshal.dumps((_FORMAT, _magic(), index))
    return len(head).to_bytes(4, "little") + head + b"".join(blobs)


def install(path: str) -> HotFinder:
    finder = HotFinder(load(path))
    sys.meta_path.insert(0, finder)
    return finder


def main(module: str = "cove.cli.runtime") -> None:
    """The launcher's entry point: serve the imports, run `module`'s main(), refresh
    the cache if something missed it, and exit at once."""
    path = cache_path(sys.argv[1:])
    finder = install(path)
    try:
        mod = __import__(module, fromlist=["main"])
        code = mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        save(finder, path)
    except Exception:
        pass
    os._exit(code if isinstance(code, int) else 1)
