"""`cove build`: a Dockerfile's needed stages run step by step, each step cached.

Each FROM starts a state from an image (the store's, pulled when missing), a previous
stage, or `scratch`. Config-only instructions change the state (cove.image.build.steps);
RUN, COPY and ADD run in a container over the state's layers
(cove.image.build.runner) and add the change as a layer. A step's cache key chains its
parent's (cove.image.build.cache), so a hit on every step rebuilds the very same
image. The image is stored and tagged only when every step succeeded: a failed or
interrupted build tags nothing and leaves no container or mount behind.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any

from cove.errors import CoveError
from cove.image import reference
from cove.image.build import cache, copying, runner
from cove.image.build.context import Context
from cove.image.build.mounts import SecretMount, parse_mount
from cove.image.build.parser import Dockerfile, Instruction, ParseError, parse
from cove.image.build.plan import Plan, Stage, needed, plan
from cove.image.build.steps import PREDEFINED, State, apply_config
from cove.image.store import Store
from cove.oci.image import OCI_CONFIG, OCI_MANIFEST, ContainerConfig, Descriptor, Manifest

LAYERED = ("RUN", "COPY", "ADD")


@dataclass
class Options:
    context: str = "."
    dockerfile: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    network: str = "none"
    labels: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    compression: str = "none"       # layers as the local store keeps them
    secrets: dict[str, str] = field(default_factory=dict)   # id: path or env:VAR
    # network=bridge: a context giving the path of a network namespace on the engine's
    # default bridge (the image layer makes none itself: cove.engine.buildnet does)
    bridge: Callable[[], AbstractContextManager[str]] | None = None
    stdin: IO[bytes] | None = None
    # a tar context unpacking past this is refused ($COVE_BUILD_MAX_CONTEXT)
    max_context: int = field(default_factory=lambda: int(
        os.environ.get("COVE_BUILD_MAX_CONTEXT") or 16 << 30))


@dataclass
class Result:
    image_id: str       # the config digest (docker's IMAGE ID)
    digest: str         # the manifest digest
    names: list[str]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_dockerfile(ctx_root: str, given: str | None) -> str:
    if given:
        if given == "-" or os.path.isfile(given):
            return given
        inside = os.path.join(ctx_root, given)
        if os.path.isfile(inside):
            return inside
        raise CoveError(f"-f {given}", "no such file")
    for name in ("Containerfile", "Dockerfile"):
        p = os.path.join(ctx_root, name)
        if os.path.isfile(p):
            return p
    raise CoveError(f"context {ctx_root}", "has no Containerfile or Dockerfile (give -f)")


class Builder:
    def __init__(self, store: Store, opts: Options,
                 out: Callable[[str], None] = lambda _s: None) -> None:
        self.store = store
        self.o = opts
        self.out = out
        self.cache = cache.Cache(store)
        self.step_no = 0
        self.total = 0
        self.df: Dockerfile
        self.plan: Plan
        self.ctx: Context
        self.stages: dict[int, State] = {}
        self.netns: str | None = None
        self.exits = contextlib.ExitStack()

    # -- the whole build ------------------------------------------------------------

    def build(self) -> Result:
        from cove.image.platforms import host_platform
        if self.o.platform and self.o.platform != str(host_platform()) and \
                self.o.platform.partition("/")[2] != host_platform().architecture:
            raise CoveError(f"--platform {self.o.platform}",
                            f"only this host's platform ({host_platform()}) can be built")
        self.ctx = Context.open(self.o.context, None if self.o.dockerfile == "-" else
                                self.o.dockerfile, self.store.tmp_dir, self.o.stdin,
                                self.o.max_context)
        known = os.path.join(self.cache.dir, "context-" +
                             hashlib.sha256(self.ctx.root.encode()).hexdigest()[:16] + ".json")
        self.ctx.load_known(known)
        try:
            path = find_dockerfile(self.ctx.root, self.o.dockerfile)
            if path == "-":
                import sys
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            shown = os.path.basename(path) if path != "-" else "Dockerfile"
            self.df = parse(text, shown)
            self.plan = plan(self.df, self.o.build_args)
            todo = needed(self.plan, self.o.target, self.df.escape)
            self.total = sum(1 + len(s.body) for s in todo)
            for s in todo:
                self.stages[s.index] = self._stage(s)
            res = self._commit(self.stages[todo[-1].index])
            self.ctx.save_known(known)
            return res
        finally:
            try:
                self.exits.close()
            finally:
                self.ctx.close()

    def _err(self, ins: Instruction, e: CoveError) -> CoveError:
        if isinstance(e, ParseError) or e.what.startswith(f"{self.df.path}:"):
            return e
        return CoveError(f"{self.df.path}:{ins.line}", str(e), e.code)

    def _stage(self, s: Stage) -> State:
        st = self._from(s)
        triggers = list(st.extra.pop("OnBuild", None) or [])
        body = list(s.body)
        if triggers:
            from cove.image.build.parser import _instruction
            pre = [_instruction(t, s.from_ins.line, self.df.path) for t in triggers]
            self.total += len(pre)
            body = pre + body
        for ins in body:
            self.step_no += 1
            self.out(f"Step {self.step_no}/{self.total} : {ins.original}")
            try:
                self._step(st, ins)
            except CoveError as e:
                raise self._err(ins, e) from None
        return st

    # -- FROM -----------------------------------------------------------------------

    def _from(self, s: Stage) -> State:
        from cove.image.platforms import host_platform
        self.step_no += 1
        self.out(f"Step {self.step_no}/{self.total} : {s.from_ins.original}")
        dep = self.plan.stage(s.base, s.index)
        if dep is not None:
            st = self.stages[dep.index].copy()
            st.args, st.cmd_from_base = {}, True
            return st
        if s.base == "scratch":
            p = host_platform()
            return State(p.os, p.architecture, p.variant, ContainerConfig(),
                         key=cache.key("FROM scratch", p.architecture))
        try:
            return self.image_state(s.base, self.o.pull)
        except CoveError as e:
            raise CoveError(f"{self.df.path}:{s.from_ins.line}",
                            f"FROM {s.base}: {e}") from None

    def image_state(self, ref: str, pull: bool) -> State:
        """A state from a stored image (pulled when missing, or always with `pull`)."""
        from cove.image.builtin import ensure_busybox, is_builtin
        digest = ""
        if not pull:
            try:
                digest = self.store.resolve(ref)
            except CoveError:
                if is_builtin(ref):
                    digest = ensure_busybox(self.store)
        if not digest:
            from cove.image.transfer import pull as do_pull
            digest = do_pull(self.store, ref)
        img = self.store.image(digest)
        import json
        raw = json.loads(img.config_raw)
        extra = {k: v for k, v in (raw.get("config") or {}).items()
                 if k in ("Healthcheck", "OnBuild", "Shell") and v}
        c = img.config
        return State(c.os, c.architecture, c.variant, ContainerConfig.parse(
            raw.get("config") or {}, "config"), extra, list(img.manifest.layers),
            list(c.diff_ids), list(c.history), cache.key("FROM", img.digest), c.created,
            c.author)

    # -- one step -------------------------------------------------------------------

    def _step(self, st: State, ins: Instruction) -> None:
        if ins.cmd not in LAYERED:
            before = st.key
            text = apply_config(st, ins, self.df.escape, self.o.build_args,
                                self.plan.global_args)
            k = cache.key(before, ins.cmd, text)
            hit = None if self.o.no_cache else self.cache.get(k)
            created = hit.created if hit else _now()
            if hit is None:
                self.cache.put(k, cache.Entry(created))
            st.key, st.created = k, created
            st.history.append({"created": created, "created_by": text, "empty_layer": True})
            self.out(f" ---> {'CACHED' if hit else 'done'}")
            return
        if ins.cmd == "RUN":
            for name in ins.flags:
                if name not in ("network", "mount"):
                    raise CoveError(f"RUN --{name}", "not supported (BuildKit's "
                                                     "RUN flags: only --network and "
                                                     "--mount=type=secret are)")
            net = ins.flag("network") or self.o.network
            if net not in ("none", "host", "default", "bridge"):
                raise CoveError(f"RUN --network={net}", "expected none, host, bridge or "
                                                        "default")
            net = self.o.network if net == "default" else net
            secrets = [parse_mount(x) for x in ins.flags.get("mount", [])]
            argv, text = self._run_argv(st, ins)
            # (secret mounts only where there are some: other RUNs keep their keys)
            k = cache.key(st.key, "RUN", argv, st.run_env(), st.config.user,
                          st.config.working_dir, net, *([[sm.key() for sm in secrets]]
                                                       if secrets else []))
            self._layered(st, ins, k, text,
                          lambda m: self._do_run(st, ins, m, argv, net, secrets))
            return
        cp = copying.plan_copy(self, st, ins)
        k = cache.key(st.key, ins.cmd, cp.key_parts)
        self._layered(st, ins, k, cp.history, cp.execute)

    def _run_argv(self, st: State, ins: Instruction) -> tuple[list[str], str]:
        if ins.json_form is not None:
            argv = list(ins.json_form)
            shown = " ".join(argv)
        else:
            script = ins.rest
            if ins.heredocs:
                only = script.strip().lstrip("<-").strip("\"'") == ins.heredocs[0].name \
                    and len(ins.heredocs) == 1
                if only:
                    script = ins.heredocs[0].content
                else:
                    script += "\n" + "".join(h.content + h.name + "\n" for h in ins.heredocs)
            argv = [*st.shell, script]
            shown = " ".join(argv)
        used = [a for a in st.run_env() if a.partition("=")[0] not in PREDEFINED]
        text = (f"|{len(used)} {' '.join(used)} " if used else "") + shown
        return argv, text

    def _do_run(self, st: State, ins: Instruction, m: runner.Mounted,
                argv: list[str], network: str, secrets: list[SecretMount]) -> None:
        from cove.image.build.fs import mkdirs
        from cove.image.build.mounts import prepare
        if st.config.working_dir:
            mkdirs(m.rootfs, st.config.working_dir)
        mounts, made, above = prepare(secrets, self.o.secrets, m.cdir, m.rootfs)
        m.created_mount_points |= made
        m.copied_up.update(above)
        runner.run(self.store, m, st.config, argv, st.run_env(), network,
                   lambda line: self.out(line), f"RUN {ins.rest.splitlines()[0][:60]}",
                   netns=self._netns() if network == "bridge" else None, mounts=mounts)

    def _netns(self) -> str:
        """The bridge network namespace the RUN steps share, made at the first that
        asks (`Options.bridge`, given by the engine side) and kept to the build's end."""
        if self.netns is None:
            if self.o.bridge is None:
                raise CoveError("--network bridge", "this build has no bridge network "
                                                    "(the engine gives it: cove build)")
            self.netns = self.exits.enter_context(self.o.bridge())
        return self.netns

    def _layered(self, st: State, ins: Instruction, k: str, text: str,
                 action: Callable[[runner.Mounted], None]) -> None:
        hit = None if self.o.no_cache else self.cache.get(k)
        if hit is not None and hit.layer is not None:
            desc, diff_id, created = hit.layer, hit.diff_id, hit.created
            from cove.image import layers
            layers.ensure_snapshot(self.store, desc.digest, desc.media_type, diff_id)
            self.out(" ---> CACHED")
        else:
            m = runner.mount(self.store, st.layers, st.diff_ids)
            try:
                try:
                    action(m)
                finally:
                    runner.unmount(self.store, m)
                desc, diff_id = runner.take_layer(self.store, m, self.o.compression)
            finally:
                runner.discard(self.store, m)
            created = _now()
            self.cache.put(k, cache.Entry(created, desc, diff_id))
            self.out(f" ---> {diff_id.partition(':')[2][:12]}")
        st.layers.append(desc)
        st.diff_ids.append(diff_id)
        st.key, st.created = k, created
        st.history.append({"created": created, "created_by": text})

    # -- the image ------------------------------------------------------------------

    def _commit(self, st: State) -> Result:
        import json
        for k, v in self.o.labels.items():
            st.config.labels[k] = v
        cfg: dict[str, Any] = {"architecture": st.architecture, "os": st.os}
        if st.variant:
            cfg["variant"] = st.variant
        cfg["created"] = st.created or _now()
        if st.author:
            cfg["author"] = st.author
        cfg["config"] = st.config_json()
        cfg["rootfs"] = {"type": "layers", "diff_ids": st.diff_ids}
        cfg["history"] = st.history
        raw = json.dumps(cfg, indent=2).encode()
        cdigest = self.store.put_blob(raw)
        m = Manifest(OCI_MANIFEST, Descriptor(OCI_CONFIG, cdigest, len(raw)), st.layers)
        digest = self.store.put_blob(m.to_bytes())
        names = [str(reference.parse(t)) for t in self.o.tags]
        self.store.add_image(digest, names)
        self.out(f"Successfully built {cdigest.partition(':')[2][:12]}")
        for n in names:
            self.out(f"Successfully tagged {n}")
        return Result(cdigest, digest, names)


def build(store: Store, opts: Options, out: Callable[[str], None] = lambda _s: None) -> Result:
    """Build `opts.context` into `store`; progress lines go to `out`."""
    for t in opts.tags:
        reference.parse(t)   # a bad tag is refused before anything is built
    from cove.image.build import rootless
    if rootless.needed():
        # an ordinary user's build runs in a user namespace of its own (buildah's way)
        if opts.network == "bridge":
            raise CoveError("--network bridge", "rootless: a build's bridge network needs "
                            "root; use none or host")
        return rootless.call(_build, store, opts, out=out)
    return Builder(store, opts, out).build()


def _build(store: Store, opts: Options, out: Callable[[str], None]) -> Result:
    return Builder(store, opts, out).build()

