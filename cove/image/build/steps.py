"""A stage's image under construction and the instructions that change only its
config (ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, CMD, ENTRYPOINT, STOPSIGNAL,
HEALTHCHECK, ONBUILD, SHELL, MAINTAINER): pure functions of the state and the
instruction, so a cached step needs no more than re-applying them.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from cove.errors import CoveError
from cove.image.build.parser import Instruction, pairs, words
from cove.oci.image import ContainerConfig, Descriptor

NOP = "/bin/sh -c #(nop) "
DEFAULT_SHELL = ["/bin/sh", "-c"]
# config keys ContainerConfig leaves out, carried from the base image as they are
EXTRA_KEYS = ("Healthcheck", "OnBuild", "Shell")
# build args docker lets through without an ARG (and keeps out of the image)
PREDEFINED = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}


@dataclass
class State:
    os: str
    architecture: str
    variant: str
    config: ContainerConfig
    extra: dict[str, Any] = field(default_factory=dict)
    layers: list[Descriptor] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    key: str = ""
    created: str = ""
    author: str = ""
    args: dict[str, str] = field(default_factory=dict)   # ARGs declared in the stage
    cmd_from_base: bool = True

    def copy(self) -> State:
        return copy.deepcopy(self)

    @property
    def shell(self) -> list[str]:
        sh = self.extra.get("Shell")
        return list(sh) if sh else list(DEFAULT_SHELL)

    def env_map(self) -> dict[str, str]:
        out = {}
        for e in self.config.env:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def vars(self) -> dict[str, str]:
        """What `$X` means in an instruction: ARG values, shadowed by ENV."""
        return {**{k: v for k, v in self.args.items() if v != "\0"}, **self.env_map()}

    def run_env(self) -> list[str]:
        """Build args a RUN sees in its environment (ENV wins over ARG)."""
        env = self.env_map()
        return [f"{k}={v}" for k, v in sorted(self.args.items())
                if v != "\0" and k not in env]

    def config_json(self) -> dict[str, Any]:
        d = self.config.to_json()
        for k in EXTRA_KEYS:
            if self.extra.get(k):
                d[k] = self.extra[k]
        return d


def _set_env(cfg: ContainerConfig, k: str, v: str) -> None:
    cfg.env = [e for e in cfg.env if e.partition("=")[0] != k] + [f"{k}={v}"]


def _command(st: State, ins: Instruction) -> list[str]:
    if ins.json_form is not None:
        return list(ins.json_form)
    return [*st.shell, ins.rest] if ins.rest else []


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
         "h": 3600 * 10**9}


def duration_ns(s: str, what: str) -> int:
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise CoveError(what, f"invalid duration {s!r}")
    return int(total)


def _healthcheck(st: State, ins: Instruction, escape: str) -> dict[str, Any]:
    rest = ins.rest
    flags: dict[str, str] = {k: v[-1] for k, v in ins.flags.items()}
    while rest.startswith("--"):
        tok, _, rest = rest.partition(" ")
        name, _, val = tok[2:].partition("=")
        flags[name] = val
        rest = rest.strip()
    kind, _, cmd = rest.partition(" ")
    if kind.upper() == "NONE":
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD" or not cmd.strip():
        raise CoveError("HEALTHCHECK", "takes NONE or [OPTIONS] CMD command")
    cmd = cmd.strip()
    test: list[str]
    try:
        v = json.loads(cmd) if cmd.startswith("[") else None
    except ValueError:
        v = None
    test = ["CMD", *v] if isinstance(v, list) else ["CMD-SHELL", cmd]
    hc: dict[str, Any] = {"Test": test}
    for f, k in (("interval", "Interval"), ("timeout", "Timeout"),
                 ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        if f in flags:
            hc[k] = duration_ns(flags[f], f"HEALTHCHECK --{f}")
    if "retries" in flags:
        if not flags["retries"].isdigit():
            raise CoveError("HEALTHCHECK --retries", f"{flags['retries']!r} is not a number")
        hc["Retries"] = int(flags["retries"])
    unknown = set(flags) - {"interval", "timeout", "start-period", "start-interval",
                            "retries"}
    if unknown:
        raise CoveError("HEALTHCHECK", f"unknown flag --{sorted(unknown)[0]}")
    return hc


def apply_config(st: State, ins: Instruction, escape: str, build_args: dict[str, str],
                 global_args: dict[str, str]) -> str:
    """Apply a config-only instruction to `st`; return its history text."""
    text = _vars_and_labels(st, ins, escape, build_args, global_args)
    if text is None:
        text = _runtime_settings(st, ins, escape)
    if text is None:
        text = _commands(st, ins, escape)
    if text is None:
        raise CoveError(ins.cmd, "is not a config instruction")
    return text


def _vars_and_labels(st: State, ins: Instruction, escape: str, build_args: dict[str, str],
                     global_args: dict[str, str]) -> str | None:
    """ENV, ARG, LABEL, MAINTAINER (None for another instruction)."""
    c = ins.cmd
    cfg = st.config
    v = st.vars()
    if c == "ENV":
        kvs = pairs(ins, v, escape)
        for k, val in kvs:
            _set_env(cfg, k, val)
        return NOP + " ENV " + " ".join(f"{k}={val}" for k, val in kvs)
    if c == "ARG":
        for k, val in pairs(ins, v, escape):
            if k in build_args:
                st.args[k] = build_args[k]
            elif val != "\0":
                st.args[k] = val
            elif global_args.get(k, "\0") != "\0":
                st.args[k] = global_args[k]
            else:
                st.args[k] = "\0"
        return NOP + " ARG " + ins.rest
    if c == "LABEL":
        kvs = pairs(ins, v, escape)
        for k, val in kvs:
            cfg.labels[k] = val
        return NOP + " LABEL " + " ".join(f"{k}={val}" for k, val in kvs)
    if c == "MAINTAINER":
        st.author = ins.rest
        return NOP + " MAINTAINER " + ins.rest
    return None


def _runtime_settings(st: State, ins: Instruction, escape: str) -> str | None:
    """WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL (None for another instruction)."""
    c = ins.cmd
    cfg = st.config
    v = st.vars()
    if c in ("WORKDIR", "USER", "STOPSIGNAL"):
        ws = words(ins.rest, escape, v)
        if len(ws) != 1:
            raise CoveError(c, {"WORKDIR": "takes exactly one path",
                                "USER": "takes exactly one user[:group]",
                                "STOPSIGNAL": "takes exactly one signal"}[c])
        if c == "WORKDIR":
            cfg.working_dir = posixpath.normpath(posixpath.join(cfg.working_dir or "/",
                                                                ws[0]))
            return NOP + " WORKDIR " + cfg.working_dir
        if c == "USER":
            cfg.user = ws[0]
            return NOP + " USER " + cfg.user
        cfg.stop_signal = ws[0]
        return NOP + " STOPSIGNAL " + ws[0]
    if c == "EXPOSE":
        for p in words(ins.rest, escape, v):
            port, _, proto = p.partition("/")
            if not port.replace("-", "").isdigit() or proto not in ("", "tcp", "udp", "sctp"):
                raise CoveError("EXPOSE", f"invalid port {p!r}")
            name = f"{port}/{proto or 'tcp'}"
            if name not in cfg.exposed_ports:
                cfg.exposed_ports.append(name)
        return NOP + " EXPOSE " + " ".join(sorted(cfg.exposed_ports))
    if c == "VOLUME":
        vols = ins.json_form if ins.json_form is not None else words(ins.rest, escape, v)
        if not vols:
            raise CoveError("VOLUME", "requires at least one path")
        for p in vols:
            if p not in cfg.volumes:
                cfg.volumes.append(p)
        return NOP + " VOLUME " + json.dumps(vols)
    return None


def _commands(st: State, ins: Instruction, escape: str) -> str | None:
    """CMD, ENTRYPOINT, HEALTHCHECK, ONBUILD, SHELL (None for another instruction)."""
    c = ins.cmd
    cfg = st.config
    if c == "CMD":
        cfg.cmd = _command(st, ins)
        st.cmd_from_base = False
        return NOP + " CMD " + json.dumps(cfg.cmd)
    if c == "ENTRYPOINT":
        cfg.entrypoint = _command(st, ins)
        if st.cmd_from_base:
            cfg.cmd = None   # docker: a new ENTRYPOINT drops a Cmd inherited from the base
        return NOP + " ENTRYPOINT " + json.dumps(cfg.entrypoint)
    if c == "HEALTHCHECK":
        st.extra["Healthcheck"] = _healthcheck(st, ins, escape)
        return NOP + " HEALTHCHECK " + ins.rest
    if c == "ONBUILD":
        word = ins.rest.split(None, 1)[0].upper() if ins.rest.strip() else ""
        if word in ("", "ONBUILD", "FROM", "MAINTAINER"):
            raise CoveError("ONBUILD", f"cannot trigger {word or 'nothing'}")
        st.extra.setdefault("OnBuild", [])
        st.extra["OnBuild"] = [*st.extra["OnBuild"], ins.rest]
        return NOP + " ONBUILD " + ins.rest
    if c == "SHELL":
        assert ins.json_form is not None
        if not ins.json_form:
            raise CoveError("SHELL", "requires at least one argument")
        st.extra["Shell"] = list(ins.json_form)
        return NOP + " SHELL " + json.dumps(ins.json_form)
    return None
