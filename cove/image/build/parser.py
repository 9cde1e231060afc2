"""The Dockerfile language, as docker's classic builder and buildah read it: parser
directives (`# syntax`, `# escape`), comments, line continuations, heredocs
(`RUN <<EOF`), `--flag=value` options, JSON (exec) and shell forms, and the variable
substitution of ARG/ENV values (`$X`, `${X}`, `${X:-word}`, `${X:+word}`).

Parsing is separate from execution so that a bad file is refused, naming its file and
line, before anything is built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from cove.errors import CoveError

INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
    "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
    "HEALTHCHECK", "SHELL"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")


class ParseError(CoveError):
    """A Dockerfile that cannot be read: `<file>:<line>: <why>`."""


@dataclass
class Heredoc:
    name: str
    content: str
    chomp: bool = False     # <<- strips leading tabs
    expand: bool = True     # a quoted name ("EOF") turns substitution off


@dataclass
class Instruction:
    """One instruction: its keyword, flags (`--from=x`), the rest of the line, and
    where it was (for errors and history)."""
    cmd: str
    rest: str
    flags: dict[str, list[str]]
    line: int
    original: str
    heredocs: list[Heredoc] = field(default_factory=list)
    json_form: list[str] | None = None

    def flag(self, name: str) -> str | None:
        v = self.flags.get(name)
        return v[-1] if v else None


@dataclass
class Dockerfile:
    path: str
    escape: str
    instructions: list[Instruction]

    def error(self, ins: Instruction, why: str) -> ParseError:
        return ParseError(f"{self.path}:{ins.line}", f"{ins.cmd} {why}")


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    """The parser directives at the top (before any other line), and where they end."""
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m or m.group(1).lower() not in ("syntax", "escape", "check"):
            break
        out[m.group(1).lower()] = m.group(2)
        i += 1
    return out, i


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    lines = text.replace("\r\n", "\n").split("\n")
    directives, start = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise ParseError(f"{path}:{start}", f"invalid escape token {escape!r}: "
                                            "only \\ and ` are allowed")
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first = i + 1
        parts: list[str] = []
        cur = raw
        while True:
            s = cur.rstrip()
            if not s.endswith(escape):
                parts.append(cur)
                i += 1
                break
            parts.append(s[:-1])
            i += 1
            # comment and empty lines inside a continuation are skipped, as docker does
            while i < len(lines) and (not lines[i].strip() or
                                      lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            cur = lines[i]
        logical = "".join(parts).strip()
        ins = _instruction(logical, first, path)
        if ins.heredocs or (_HEREDOC.search(logical) and ins.cmd in ("RUN", "COPY", "ADD")):
            i = _read_heredocs(ins, lines, i, path)
        out.append(ins)
    return Dockerfile(path, escape, out)


def _instruction(logical: str, line: int, path: str) -> Instruction:
    word, _, rest = logical.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    cmd = word.upper()
    if cmd not in INSTRUCTIONS:
        raise ParseError(f"{path}:{line}", f"unknown instruction: {word}")
    rest = rest.strip()
    flags: dict[str, list[str]] = {}
    if cmd not in ("ENV", "LABEL", "ARG", "ONBUILD", "MAINTAINER", "USER", "WORKDIR",
                   "STOPSIGNAL", "EXPOSE", "VOLUME", "SHELL", "CMD", "ENTRYPOINT"):
        while rest.startswith("--"):
            tok, _, after = rest.partition(" ")
            name, eq, val = tok[2:].partition("=")
            if not name:
                break
            flags.setdefault(name, []).append(val if eq else "true")
            rest = after.strip()
    ins = Instruction(cmd, rest, flags, line, logical)
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME") and \
            rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            ins.json_form = v
    if cmd == "SHELL" and ins.json_form is None:
        raise ParseError(f"{path}:{line}", "SHELL requires the arguments as a JSON array")
    return ins


def _read_heredocs(ins: Instruction, lines: list[str], i: int, path: str) -> int:
    """Bodies of the `<<NAME` markers of `ins`, from the lines after it; returns the
    index of the line after the last terminator."""
    for m in _HEREDOC.finditer(ins.rest):
        chomp, quote, name = m.group(1) == "-", m.group(2), m.group(3)
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise ParseError(f"{path}:{ins.line}",
                                 f"{ins.cmd}: heredoc <<{name} is not terminated")
            text = lines[i]
            i += 1
            if (text.lstrip("\t") if chomp else text) == name:
                break
            body.append(text.lstrip("\t") if chomp else text)
        ins.heredocs.append(Heredoc(name, "\n".join(body) + "\n", chomp, not quote))
    return i


# -- variable substitution ------------------------------------------------------------

def expand(word: str, env: dict[str, str], escape: str = "\\", what: str = "") -> str:
    """Substitute `$X`, `${X}`, `${X:-w}`, `${X:+w}` (and `${X-w}`, `${X+w}`) from
    `env`; the escape character keeps a `$` literal. Quotes are kept (they matter to
    the instruction that reads the result)."""
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        c = word[i]
        if c == escape and i + 1 < n and word[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if c == "'" and "'" in word[i + 1:]:
            j = word.index("'", i + 1)
            out.append(word[i:j + 1])
            i = j + 1
            continue
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        if word[i + 1] == "{":
            j = word.find("}", i + 2)
            if j < 0:
                raise CoveError(what or word, "missing '}' in variable substitution")
            inner = word[i + 2:j]
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])(.*))?$", inner, re.S)
            if not m:
                raise CoveError(what or word, f"bad substitution ${{{inner}}}")
            name, op, alt = m.group(1), m.group(2), m.group(3)
            colon = ":" in inner[len(name):len(name) + 1]
            val = env.get(name)
            if op == "-":
                if val is None or (colon and val == ""):
                    val = expand(alt, env, escape, what)
            elif op == "+":
                val = expand(alt, env, escape, what) if val is not None and \
                    (val != "" or not colon) else ""
            out.append(val or "")
            i = j + 1
            continue
        m2 = re.match(r"[A-Za-z_][A-Za-z0-9_]*", word[i + 1:])
        if not m2:
            out.append(c)
            i += 1
            continue
        out.append(env.get(m2.group(0), ""))
        i += 1 + len(m2.group(0))
    return "".join(out)


def _var_end(s: str, i: int) -> int:
    """The end of the `$...` reference starting at `s[i]`."""
    if s[i + 1:i + 2] == "{":
        j = s.find("}", i + 2)
        return len(s) if j < 0 else j + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s[i + 1:])
    return i + 1 + (len(m.group(0)) if m else 0)


def words(s: str, escape: str = "\\", env: dict[str, str] | None = None) -> list[str]:
    """Split on blanks, honouring quotes and the escape character (quotes removed);
    with `env`, variables are substituted too (not inside single quotes), a value
    with blanks staying one word."""
    out: list[str] = []
    cur: list[str] = []
    have = False
    quote = ""
    i = 0
    while i < len(s):
        c = s[i]
        if env is not None and c == "$" and quote != "'" and i + 1 < len(s):
            j = _var_end(s, i)
            if j > i + 1:
                cur.append(expand(s[i:j], env, escape))
                have = True
                i = j
                continue
        if quote:
            if c == quote:
                quote = ""
            elif c == escape and quote == '"' and i + 1 < len(s) and s[i + 1] in '"$' + escape:
                i += 1
                cur.append(s[i])
            else:
                cur.append(c)
        elif c in "\"'":
            quote, have = c, True
        elif c == escape and i + 1 < len(s):
            i += 1
            cur.append(s[i])
            have = True
        elif c.isspace():
            if cur or have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if quote:
        raise CoveError(s, "unterminated quote")
    if cur or have:
        out.append("".join(cur))
    return out


def pairs(ins: Instruction, env: dict[str, str], escape: str) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` (ENV, LABEL, ARG) or the old `K V` form (ENV, LABEL)."""
    rest = ins.rest
    ws = words(rest, escape, env)
    if not ws:
        raise CoveError(ins.cmd, "requires at least one argument")
    if ins.cmd in ("ENV", "LABEL") and "=" not in ws[0]:
        if len(ws) < 2:
            raise CoveError(ins.cmd, f"{ws[0]!r} needs a value")
        k, _, v = rest.strip().partition(" ")
        return [(words(k, escape, env)[0], " ".join(words(v.strip(), escape, env)))]
    out = []
    for w in ws:
        k, eq, v = w.partition("=")
        if not k:
            raise CoveError(ins.cmd, f"{w!r}: empty name")
        if not eq and ins.cmd != "ARG":
            raise CoveError(ins.cmd, f"{w!r} is not KEY=VALUE")
        out.append((k, v) if eq else (k, "\0"))  # ARG without default: "\0"
    return out
