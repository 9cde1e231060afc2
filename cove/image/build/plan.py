"""A Dockerfile split into stages, and which of them a target needs: the target, the
stages it starts `FROM`, and those its `COPY --from` reads, transitively. The others
are never built (docker's classic builder builds them all; BuildKit and buildah skip
them, as here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cove.errors import CoveError
from cove.image.build.parser import Dockerfile, Instruction, expand, words


@dataclass
class Stage:
    index: int
    name: str            # "" when unnamed
    base: str            # the FROM argument, global ARGs substituted
    platform: str
    from_ins: Instruction
    body: list[Instruction] = field(default_factory=list)


@dataclass
class Plan:
    global_args: dict[str, str]       # ARGs before the first FROM (with --build-arg)
    stages: list[Stage]

    def stage(self, ref: str, before: int | None = None) -> Stage | None:
        """The stage a `FROM`/`--from` names (by name, any case, or index), if any:
        only stages before `before` can be referred to."""
        cands = self.stages[:before] if before is not None else self.stages
        for s in cands:
            if s.name and s.name == ref.lower():
                return s
        if ref.isdigit() and int(ref) < len(cands):
            return cands[int(ref)]
        return None


def plan(df: Dockerfile, build_args: dict[str, str]) -> Plan:
    gargs: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in df.instructions:
        if ins.cmd == "FROM":
            ws = words(ins.rest, df.escape, gargs)
            if not ws:
                raise df.error(ins, "requires an image name")
            name = ""
            if len(ws) == 3 and ws[1].lower() == "as":
                name = ws[2].lower()
                if not name or not name[0].isalpha():
                    raise df.error(ins, f"invalid stage name {ws[2]!r}")
            elif len(ws) != 1:
                raise df.error(ins, "takes IMAGE [AS NAME]")
            if name and any(s.name == name for s in stages):
                raise df.error(ins, f"duplicate stage name {name!r}")
            plat = expand(ins.flag("platform") or "", gargs, df.escape)
            stages.append(Stage(len(stages), name, ws[0], plat, ins))
        elif not stages:
            if ins.cmd != "ARG":
                raise df.error(ins, "comes before any FROM (only ARG may)")
            try:
                from cove.image.build.parser import pairs
                for k, v in pairs(ins, gargs, df.escape):
                    gargs[k] = build_args.get(k, "" if v == "\0" else v) \
                        if k in build_args or v != "\0" else "\0"
            except CoveError as e:
                raise df.error(ins, e.why or str(e)) from None
        else:
            stages[-1].body.append(ins)
    if not stages:
        raise CoveError(df.path, "no FROM instruction: nothing to build")
    return Plan(gargs, stages)


def needed(p: Plan, target: str | None, escape: str) -> list[Stage]:
    """The stages to build for `target` (the last stage when None), in file order."""
    if target:
        t = p.stage(target)
        if t is None:
            raise CoveError(f"--target {target}", "no stage of that name in the Dockerfile")
    else:
        t = p.stages[-1]
    want: set[int] = set()
    todo = [t]
    env = {k: v for k, v in p.global_args.items() if v != "\0"}
    while todo:
        s = todo.pop()
        if s.index in want:
            continue
        want.add(s.index)
        dep = p.stage(s.base, s.index)
        if dep is not None:
            todo.append(dep)
        for ins in s.body:
            frm = ins.flag("from") if ins.cmd in ("COPY", "ADD") else None
            if frm:
                d = p.stage(expand(frm, env, escape), s.index)
                if d is not None:
                    todo.append(d)
    return [s for s in p.stages if s.index in want]
