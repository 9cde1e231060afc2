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
use): whatever missed is added when the process exits. One file per verb keeps its
index small; only the index is read at start, and each module's code (one pread) when
it is imported, so a file grown by rare branches (1.2-1.8 MB for create, start, kill,
delete) costs a call no more than the ~0.2 MB it uses.
Nothing else changes: a module not in the cache, or a cache that cannot be read or
written (a read-only tree, another user), is imported as always.

At exit, `main()` flushes stdout and stderr and ends the process with os._exit: the
interpreter's teardown (freeing every module, running the GC) costs ~1-3 ms and the
runtime leaves nothing for it to do (its files are closed, its children reaped or
handed on). An exception other than the CLI's own errors still gets Python's traceback.
"""

import marshal
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

_FORMAT = "cove-hotpath-2"
# .../cove, without `os` (cove/runtime/lite.py says why): the launcher puts absolute
# directories on sys.path; a relative one (a hand-made sys.path) takes `os`'s abspath.
_PKG = (__file__ if __file__.startswith("/") else
        __import__("os").path.abspath(__file__)).rsplit("/", 2)[0]
# The standard library's directory: its pure modules on the path (ctypes, struct,
# types, __future__) are served the same way, its extension modules (_ctypes, _json)
# found without the walk of sys.path.
_STDLIB = (getattr(sys.modules.get("encodings"), "__file__", None) or "").rsplit("/", 2)[0] \
    or "/nonexistent"
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
    return "/".join((_PKG, "__pycache__",
                     f"hotpath.{sys.implementation.cache_tag}.{verb}.bin"))


# The fds load() keeps for Slice reads, and whether this process is a forked child.
_cache_fds: list[int] = []
_forked = False


def _after_fork() -> None:
    """In every forked child (the container's init and stage 1, hooks, exec's child):
    close the cache's fds, so that no process that enters a container holds a host
    file it did not hold before the Slice (write access to this file would be code
    execution in the next cove-runtime). A child's imports take the usual path."""
    global _forked
    _forked = True
    for fd in _cache_fds:
        try:
            posix.close(fd)
        except OSError:
            pass
    _cache_fds.clear()


posix.register_at_fork(after_in_child=_after_fork)


class Slice:
    """A module's code where it lies in the cache file, read (one pread) only when that
    module is imported. A verb's file is the union of all its runs' modules (1.2-1.8 MB
    for create, start, kill, delete once the tests have run them), of which one call
    needs ~0.2 MB: reading the whole file into a fresh buffer cost each call ~300 page
    faults (~2 ms here). The file stays open (close-on-exec) in the runtime's own
    process, which closes only fds it opened; a forked child closes it (_after_fork)
    and never reads a Slice, since its number may be reused there."""

    __slots__ = ("fd", "length", "offset")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd, self.offset, self.length = fd, offset, length

    def __bytes__(self) -> bytes:
        if _forked:
            raise OSError(9, "the module cache is closed in a forked child")
        data = posix.pread(self.fd, self.length, self.offset)
        if len(data) != self.length:
            raise OSError(5, "the module cache is short")
        return data


# name -> (source path, mtime_ns, size, is package, marshalled code; empty for an
# extension module). The code of a module read from the file is a Slice until used.
Entry = tuple[str, int, int, bool, bytes | Slice]


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

    def find_spec(self, name: str, path: "Sequence[str] | None" = None,
                  target: "ModuleType | None" = None) -> "Any":
        e = self.entries.get(name)
        if e is None:
            return None
        origin, mtime, size, is_pkg, code = e
        try:
            st = posix.stat(origin)
            if st.st_mtime_ns != mtime or st.st_size != size:
                return None  # edited: the usual import, and a new cache at exit
            if not isinstance(code, bytes):
                code = bytes(code)
        except OSError:
            return None
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
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        spec.loader_state = code
        return spec

    def create_module(self, spec: "Any") -> None:
        return None  # the default module object

    def exec_module(self, module: "ModuleType") -> None:
        spec: Any = module.__spec__
        exec(marshal.loads(spec.loader_state), module.__dict__)


def load(path: str) -> dict[str, Entry]:
    """The cache's entries, or {} when it is missing, foreign or of another format.

    The file: 4 bytes (the index's length), the index (marshal: format tag, magic
    number, name -> source path, mtime_ns, size, is package, offset, length), then the
    modules' code. Only the index is read here; each module's code when it is imported
    (Slice), through a copy of the fd kept open (close-on-exec) at a high number
    (_HIGH_FD): the lowest ones are the caller's to pass (--preserve-fds 3..N+2, which
    must find fd 3 closed when the caller did not open it, and must never hand this
    file to the container). Where no such number can be had, the whole file is read
    now, as before the Slice."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return {}
    high = -1
    try:
        st = posix.fstat(fd)
        if st.st_uid not in (0, posix.geteuid()) or st.st_mode & 0o022 or st.st_size < 4:
            return {}
        head = posix.pread(fd, 32768, 0)
        n = int.from_bytes(head[:4], "little")
        if n > st.st_size - 4:
            return {}
        if len(head) < 4 + n:
            head += posix.pread(fd, 4 + n - len(head), len(head))
        fmt, magic, index = marshal.loads(memoryview(head)[4:4 + n])
        if fmt != _FORMAT or magic != _magic() or not isinstance(index, dict):
            return {}
        base = 4 + n
        high = -1 if _forked else _out_of_the_way(fd)
        if high < 0:
            data = posix.pread(fd, st.st_size - base, base)
            return {name: (origin, mtime, size, is_pkg, data[off:off + length])
                    for name, (origin, mtime, size, is_pkg, off, length) in index.items()}
        entries: dict[str, Entry] = {
            name: (origin, mtime, size, is_pkg, Slice(high, base + off, length) if length else b"")
            for name, (origin, mtime, size, is_pkg, off, length) in index.items()}
        _cache_fds.append(high)
        return entries
    except (OSError, ValueError, EOFError, TypeError):
        if high >= 0:
            posix.close(high)
        return {}
    finally:
        posix.close(fd)


# Where the cache's fd is kept (load): far above the fds a caller passes to the runtime.
_HIGH_FD = 1000


def _out_of_the_way(fd: int) -> int:
    """A close-on-exec copy of fd at a free number at or just below _HIGH_FD, or -1
    (none free, or over RLIMIT_NOFILE)."""
    for target in range(_HIGH_FD, _HIGH_FD - 16, -1):
        try:
            posix.fstat(target)
            continue  # taken: never dup2 over an open fd
        except OSError:
            pass
        try:
            return posix.dup2(fd, target, inheritable=False)
        except OSError:
            return -1
    return -1


def _code_of(mod: "ModuleType") -> Entry | None:
    """The entry of a module imported from its source: the bytes of its .pyc when that
    matches the source as it is now, else compiled afresh."""
    spec = getattr(mod, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if not isinstance(origin, str) or not (origin.startswith(_PKG + "/") or
                                           origin.startswith(_STDLIB + "/")):
        return None  # built-in, frozen or foreign: asked at every exit, so without `os`
    import os  # only for a module to add (cove/runtime/lite.py)

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
    import os  # only when the cache is rewritten (cove/runtime/lite.py)

    # Modules since removed from the tree leave with this rewrite; so do those whose
    # code can no longer be read (they join again when next imported).
    kept: dict[str, Entry] = {}
    for k, (origin, mtime, size, is_pkg, code) in entries.items():
        try:
            if os.path.exists(origin):
                kept[k] = (origin, mtime, size, is_pkg, bytes(code))
        except OSError:
            pass
    entries = kept
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
        data = bytes(code)
        index[name] = (origin, mtime, size, is_pkg, off, len(data))
        blobs.append(data)
        off += len(data)
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
    posix._exit(code if isinstance(code, int) else 1)
