"""The build context: a directory (or a tar, `-` for stdin, unpacked into a temp dir),
seen through its ignore file. COPY and ADD sources are resolved here: globs, symlinks
followed only while they stay inside the context (one that leaves it, a `../` path, or
a symlink loop is refused, naming the path), and hashed by content for the cache key.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import json
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from cove.errors import CoveError
from cove.image.build.fs import unpack_safely
from cove.image.build.ignore import Ignore

_MAX_LINKS = 40


@dataclass
class Source:
    """One resolved source: its path in the context (relative) and on disk."""
    rel: str
    path: str


class Context:
    def __init__(self, root: str, ignore: Ignore, tmp: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.ignore = ignore
        self.tmp = tmp        # a temp dir this context owns (an unpacked tar)
        self._digests: dict[str, str] = {}
        # file digests of earlier builds, by path, valid while size, mtime, ctime and
        # inode are unchanged (an unchanged rebuild then reads no file contents)
        self.known: dict[str, list[Any]] = {}
        self.known_dirty = False

    @classmethod
    def open(cls, spec: str, dockerfile: str | None, tmp_parent: str,
             stdin: IO[bytes] | None = None, max_size: int = 16 << 30) -> Context:
        """A context from a directory, a tarball or `-` (a tar on stdin); a tar that
        unpacks past `max_size` bytes is refused (a directory is read in place)."""
        if spec != "-" and os.path.isdir(spec):
            return cls(spec, Ignore.load(spec, dockerfile))
        if spec != "-" and not os.path.exists(spec):
            raise CoveError(f"context {spec}", "no such file or directory")
        tmp = tempfile.mkdtemp(prefix="build-context-", dir=tmp_parent)
        try:
            if spec == "-":
                src = stdin if stdin is not None else os.fdopen(0, "rb", closefd=False)
                buf = io.BufferedReader(src)  # type: ignore[type-var]
                tree = unpack_safely(buf, os.path.join(tmp, "x"), "context -", max_size)
            else:
                with open(spec, "rb") as f:
                    tree = unpack_safely(io.BufferedReader(f), os.path.join(tmp, "x"),
                                         f"context {spec}", max_size)
        except BaseException:
            from cove.image.layers import remove_tree
            remove_tree(tmp)
            raise
        return cls(tree, Ignore.load(tree, dockerfile), tmp)

    def close(self) -> None:
        if self.tmp:
            from cove.image.layers import remove_tree
            remove_tree(self.tmp)
            self.tmp = None

    # -- resolving -----------------------------------------------------------------

    def resolve(self, rel: str, what: str) -> str:
        """The on-disk path of context path `rel`, symlinks followed inside the
        context; leaving it (`../`, an absolute or relative link out) is an error."""
        norm = posixpath.normpath("/" + rel)
        if rel.startswith("..") or posixpath.normpath(rel).startswith("../") or \
                posixpath.normpath(rel) == "..":
            raise CoveError(what, f"{rel}: outside the build context")
        parts = [p for p in norm.split("/") if p]
        cur = self.root
        hops = 0
        while parts:
            p = parts.pop(0)
            nxt = os.path.join(cur, p)
            try:
                st = os.lstat(nxt)
            except FileNotFoundError:
                raise CoveError(what, f"{rel}: no such file or directory in the build "
                                      "context") from None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise CoveError(what, f"{rel}: symlink loop in the build context")
                target = os.readlink(nxt)
                joined = os.path.normpath(os.path.join(cur, target))
                if not (joined == self.root or joined.startswith(self.root + "/")):
                    raise CoveError(what, f"{rel}: symlink to {target} leaves the build "
                                          "context")
                rest = os.path.relpath(joined, self.root)
                parts = [x for x in rest.split("/") if x and x != "."] + parts
                cur = self.root
                continue
            cur = nxt
        return cur

    def glob(self, pattern: str, what: str) -> list[Source]:
        """Context paths matching `pattern` (Go's filepath.Match per component), the
        ignored ones left out; none is an error."""
        norm = posixpath.normpath(pattern.lstrip("/")) if pattern.strip("/") else "."
        if norm == ".." or norm.startswith("../"):
            raise CoveError(what, f"{pattern}: outside the build context")
        if not any(c in norm for c in "*?["):
            if norm != "." and self.ignore.ignored(norm):
                raise CoveError(what, f"{pattern}: excluded by .dockerignore")
            return [Source(norm, self.resolve(norm, what))]
        parts = norm.split("/")
        cands = [""]
        for p in parts:
            nxt = []
            for c in cands:
                d = self.resolve(c, what) if c else self.root
                if not os.path.isdir(d):
                    continue
                for name in sorted(os.listdir(d)):
                    rel = f"{c}/{name}" if c else name
                    if fnmatch.fnmatchcase(name, p) and not self.ignore.ignored(rel):
                        nxt.append(rel)
            cands = nxt
        out = [Source(c, self.resolve(c, what)) for c in cands]
        if not out:
            raise CoveError(what, f"{pattern}: no source files were specified "
                                  "(nothing in the build context matches)")
        return out

    # -- walking and hashing -------------------------------------------------------

    def walk(self, src: Source) -> list[tuple[str, str]]:
        """(relative path under the source, disk path) of a source directory's entries,
        parents before children, ignored ones left out; symlinks not followed."""
        out: list[tuple[str, str]] = []

        def rec(d: str, rel_ctx: str, rel: str) -> None:
            try:
                names = sorted(os.listdir(d))
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise CoveError(src.rel, "symlink loop in the build context") from None
                raise
            for name in names:
                ctx_rel = f"{rel_ctx}/{name}" if rel_ctx else name
                r = f"{rel}/{name}" if rel else name
                full = os.path.join(d, name)
                ignored = self.ignore.ignored(ctx_rel)
                isdir = os.path.isdir(full) and not os.path.islink(full)
                if ignored and not (isdir and self.ignore.may_have_exceptions_under(ctx_rel)):
                    continue
                if not ignored:
                    out.append((r, full))
                if isdir:
                    rec(full, ctx_rel, r)
        rec(src.path, "" if src.rel == "." else os.path.relpath(src.path, self.root), "")
        return out

    def digest(self, src: Source) -> str:
        """A content digest of a source (file or tree): names, types, modes, link
        targets and file contents; not times or owners, which COPY replaces anyway."""
        key = src.path
        if key in self._digests:
            return self._digests[key]
        h = hashlib.sha256()
        st = os.stat(src.path)
        if stat.S_ISDIR(st.st_mode):
            h.update(b"dir %o\n" % stat.S_IMODE(st.st_mode))
            for r, full in self.walk(src):
                h.update(r.encode() + b"\0" + self._entry(full).encode() + b"\n")
        else:
            h.update(self._entry(src.path, follow=True).encode())
        out = "sha256:" + h.hexdigest()
        self._digests[key] = out
        return out


    def _entry(self, path: str, follow: bool = False) -> str:
        st = os.stat(path) if follow else os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return _entry_digest(path, st)
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode]
        k = self.known.get(path)
        if k is not None and k[:5] == sig:
            return str(k[5])
        d = _entry_digest(path, st)
        self.known[path] = [*sig, d]
        self.known_dirty = True
        return d

    def load_known(self, path: str) -> None:
        if self.tmp:
            return      # an unpacked tar: new files every time
        try:
            with open(path) as f:
                o = json.load(f)
            if o.get("root") == self.root and isinstance(o.get("files"), dict):
                self.known = o["files"]
        except (OSError, ValueError):
            pass

    def save_known(self, path: str) -> None:
        if self.tmp or not self.known_dirty:
            return
        import tempfile as tf
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tf.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"root": self.root, "files": self.known}, f)
        os.replace(tmp, path)


def _entry_digest(path: str, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "l " + os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return f"d {stat.S_IMODE(st.st_mode):o}"
    if not stat.S_ISREG(st.st_mode):
        return f"o {st.st_mode:o} {st.st_rdev}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"f {stat.S_IMODE(st.st_mode):o} {h.hexdigest()}"
