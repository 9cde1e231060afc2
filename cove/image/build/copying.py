"""COPY and ADD: sources from the context (globs, .dockerignore applied, hashed by
content for the cache key), from another stage or image (`--from`, keyed by that
stage's own cache key), or a heredoc; `--chown` (names resolved in the image's
/etc/passwd and /etc/group), `--chmod`; ADD unpacks local tars and refuses URLs.

docker's rules for the destination: relative to WORKDIR; a directory when it ends
with `/` or when there are several sources (then the `/` is required); a source
directory's contents (not the directory itself) are copied into it. Files from the
context become root's unless `--chown`; files from a stage keep their owners.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.image.build import fs, runner
from cove.image.build.context import Source
from cove.image.build.parser import Instruction, words
from cove.image.build.steps import NOP, State

if TYPE_CHECKING:
    from cove.image.build.builder import Builder

_FLAGS = {"COPY": {"from", "chown", "chmod", "link"}, "ADD": {"chown", "chmod", "link",
                                                               "checksum", "keep-git-dir"}}


@dataclass
class CopyPlan:
    key_parts: list[Any]
    history: str
    execute: Callable[[runner.Mounted], None] = field(repr=False)


def _chown(root: str, spec: str) -> tuple[int, int]:
    user, _, group = spec.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        return int(user), int(group or user)
    from cove.image.bundle import resolve_user
    uid, gid, _ = resolve_user(root, spec)
    if not group:
        gid = uid if user.isdigit() else gid
    return uid, gid


def _root_glob(root: str, pattern: str, what: str) -> list[tuple[str, str]]:
    """(path as named, path on disk) of what `pattern` matches in a mounted rootfs."""
    norm = posixpath.normpath("/" + pattern)
    if not any(c in norm for c in "*?["):
        p = fs.in_root(root, norm)
        if not os.path.lexists(p):
            raise CoveError(what, f"{pattern}: no such file or directory")
        return [(norm, p)]
    cands = ["/"]
    for part in [x for x in norm.split("/") if x]:
        nxt = []
        for c in cands:
            d = fs.in_root(root, c)
            if os.path.isdir(d):
                nxt += [posixpath.join(c, n) for n in sorted(os.listdir(d))
                        if fnmatch.fnmatchcase(n, part)]
        cands = nxt
    if not cands:
        raise CoveError(what, f"{pattern}: no source files were specified")
    return [(c, fs.in_root(root, c)) for c in cands]


def _walk_tree(top: str) -> list[tuple[str, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel = os.path.relpath(dirpath, top)
        for n in sorted(dirnames + filenames):
            out.append((n if rel == "." else f"{rel}/{n}", os.path.join(dirpath, n)))
    return out


@dataclass
class _Args:
    """A COPY/ADD's words after substitution: what, where, as whom."""
    cmd: str
    srcs: list[str]
    dest_abs: str
    dest_dir: bool          # the destination is a directory (ends with / or is .)
    chown: str | None
    chmod_s: str | None
    mode: int | None
    wd: str
    heredocs: dict[str, Any]


def _parse_args(b: Builder, st: State, ins: Instruction) -> _Args:
    c = ins.cmd
    bad = set(ins.flags) - _FLAGS[c]
    if bad:
        raise CoveError(c, f"unknown flag --{sorted(bad)[0]}")
    v = st.vars()
    esc = b.df.escape
    args = list(ins.json_form) if ins.json_form is not None else words(ins.rest, esc, v)
    if ins.json_form is not None:
        from cove.image.build.parser import expand
        args = [expand(a, v, esc) for a in args]
    if len(args) < 2:
        raise CoveError(c, "requires at least one source and a destination")
    srcs, dest = args[:-1], args[-1]
    wd = st.config.working_dir or "/"
    dest_abs = posixpath.join(wd, dest) if not dest.startswith("/") else dest
    dest_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
    if len(srcs) > 1 and not dest_dir:
        raise CoveError(c, "with more than one source file, the destination must be a "
                           "directory and end with a /")
    chown = ins.flag("chown")
    chown = words(chown, esc, v)[0] if chown else None
    chmod_s = ins.flag("chmod")
    mode: int | None = None
    if chmod_s:
        try:
            mode = int(chmod_s, 8)
        except ValueError:
            raise CoveError(f"{c} --chmod", f"{chmod_s!r} is not an octal mode") from None
    for s in srcs:
        if "://" in s or s.startswith("git@"):
            raise CoveError(f"{c} {s}", "URLs are not supported: there is no network to "
                                        "them from a build here; download the file into "
                                        "the context and COPY it")
    return _Args(c, srcs, dest_abs, dest_dir, chown, chmod_s, mode, wd,
                 {h.name: h for h in ins.heredocs})


def plan_copy(b: Builder, st: State, ins: Instruction) -> CopyPlan:
    a = _parse_args(b, st, ins)
    keys: list[Any] = [a.dest_abs, a.dest_dir, a.chown, a.chmod_s, a.wd]
    h = hashlib.sha256()
    src_stage: State | None = None
    ctx_sources: list[tuple[str, Source | None]] = []
    frm = ins.flag("from")
    if frm:
        frm = words(frm, b.df.escape, {**{k: x for k, x in b.plan.global_args.items()
                                          if x != "\0"}, **st.vars()})[0]
        stage = b.plan.stage(frm, None)
        src_stage = b.stages[stage.index] if stage is not None and stage.index in \
            b.stages else b.image_state(frm, False)
        keys += ["from", src_stage.key, a.srcs]
        h.update(src_stage.key.encode())
    else:
        for s in a.srcs:
            name = s[2:].lstrip("-").strip("\"'") if s.startswith("<<") else ""
            if name in a.heredocs:
                ctx_sources.append((name, None))
                keys.append(["heredoc", name, a.heredocs[name].content])
                continue
            for src in b.ctx.glob(s, f"{a.cmd} {s}"):
                d = b.ctx.digest(src)
                ctx_sources.append((src.rel, src))
                keys.append([src.rel, d])
                h.update(d.encode())
    kind = "multi" if len(a.srcs) > 1 else ("dir" if ctx_sources and ctx_sources[0][1]
                                            and os.path.isdir(ctx_sources[0][1].path)
                                            else "file")
    history = f"{NOP}{a.cmd} {kind}:{h.hexdigest()} in {a.dest_abs} "
    return CopyPlan(keys, history, _Copier(b, st, a, src_stage, ctx_sources).execute)


class _Copier:
    """A planned COPY/ADD carried out in a step's mounted rootfs."""

    def __init__(self, b: Builder, st: State, a: _Args, src_stage: State | None,
                 ctx_sources: list[tuple[str, Source | None]]) -> None:
        self.b, self.st, self.a = b, st, a
        self.src_stage = src_stage
        self.ctx_sources = ctx_sources

    def put_tree(self, root: str, items: list[tuple[str, str]], target: str,
                 uid: int | None, gid: int | None, new_root: bool) -> None:
        top = fs.mkdirs(root, target)
        if new_root and uid is not None and self.a.chown:
            os.lchown(top, uid, gid if gid is not None else uid)
        for rel, full in items:
            parent = fs.in_root(root, posixpath.dirname(posixpath.join(target, rel)))
            fs.copy_entry(full, os.path.join(parent, posixpath.basename(rel)), uid, gid,
                          self.a.mode)

    def put_file(self, root: str, full: str, name: str, uid: int | None,
                 gid: int | None) -> None:
        a = self.a
        into_dir = a.dest_dir or os.path.isdir(fs.in_root(root, a.dest_abs))
        target = posixpath.join(a.dest_abs, name) if into_dir else a.dest_abs
        parent = fs.mkdirs(root, posixpath.dirname(target) or "/")
        fs.copy_entry(full, os.path.join(parent, posixpath.basename(target)), uid, gid,
                      a.mode, follow=True)

    def execute(self, m: runner.Mounted) -> None:
        root, a = m.rootfs, self.a
        if self.st.config.working_dir:
            fs.mkdirs(root, self.st.config.working_dir)
        uid: int | None
        gid: int | None
        if a.chown:
            uid, gid = _chown(root, a.chown)
        else:
            uid, gid = (None, None) if self.src_stage is not None else (0, 0)
        new_root = not os.path.lexists(fs.in_root(root, a.dest_abs))
        if self.src_stage is not None:
            self._from_stage(root, self.src_stage, uid, gid, new_root)
        else:
            self._from_context(m, uid, gid, new_root)

    def _from_stage(self, root: str, src: State, uid: int | None, gid: int | None,
                    new_root: bool) -> None:
        a, store = self.a, self.b.store
        sm = runner.mount(store, src.layers, src.diff_ids)
        try:
            for pat in a.srcs:
                for named, full in _root_glob(sm.rootfs, pat, f"{a.cmd} {pat}"):
                    if os.path.isdir(full):
                        self.put_tree(root, _walk_tree(full), a.dest_abs, uid, gid, new_root)
                    else:
                        self.put_file(root, full, posixpath.basename(named), uid, gid)
        finally:
            runner.discard(store, sm)

    def _from_context(self, m: runner.Mounted, uid: int | None, gid: int | None,
                      new_root: bool) -> None:
        root, a = m.rootfs, self.a
        for rel, src in self.ctx_sources:
            if src is None:
                hd = a.heredocs[rel]
                tmp = os.path.join(m.cdir, "heredoc")
                with open(tmp, "w") as f:
                    f.write(hd.content)
                os.chmod(tmp, 0o644)
                self.put_file(root, tmp, rel, uid, gid)
                os.unlink(tmp)
            elif os.path.isdir(src.path):
                self.put_tree(root, self.b.ctx.walk(src), a.dest_abs, uid, gid, new_root)
            elif a.cmd == "ADD" and fs.is_archive(src.path):
                fs.extract_tar(src.path, root, a.dest_abs, uid if a.chown else None,
                               gid if a.chown else None, os.path.join(m.cdir, "add-tar"))
            else:
                self.put_file(root, src.path, posixpath.basename(src.rel), uid, gid)
