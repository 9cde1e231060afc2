"""`.dockerignore` / `.containerignore`: which context paths a build never sees.

The rules of moby's patternmatcher: one pattern a line, `#` comments, patterns cleaned
as Go's filepath.Clean (a leading `/` dropped), Go's filepath.Match syntax (`*`, `?`,
`[a-z]`, `\\` escapes) plus `**` for any number of directories, `!` for exceptions.
The last pattern that matches a path decides; a pattern that matches a directory also
matches everything under it. Ignored files are left out of the context, so neither
COPY nor the cache key sees them.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

from cove.errors import CoveError


@dataclass
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _translate(pat: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat[i:i + 2] == "**":
                i += 2
                if pat[i:i + 1] == "/":          # `**/`: zero or more directories
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                raise CoveError(f".dockerignore: {pat}", "syntax error in pattern")
            cls = pat[i + 1:j]
            if cls.startswith("^"):
                cls = "!" + cls[1:]
            cls = cls.replace("\\", "\\\\")
            out.append("[^" + cls[1:] + "]" if cls.startswith("!") else "[" + cls + "]")
            i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.S)


class Ignore:
    """The patterns of one ignore file; `ignored(rel)` for a slash-separated path
    relative to the context root."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            excl = line.startswith("!")
            if excl:
                line = line[1:].strip()
            line = posixpath.normpath(line).lstrip("/") if line else line
            if not line or line == ".":
                continue
            self.patterns.append(_Pattern(line, excl, _translate(line)))

    @classmethod
    def load(cls, context: str, dockerfile: str | None = None) -> Ignore:
        """The context's ignore file: `<Dockerfile>.dockerignore` next to it, else
        `.containerignore`, else `.dockerignore`."""
        cands = [dockerfile + ".dockerignore"] if dockerfile else []
        cands += [os.path.join(context, ".containerignore"),
                  os.path.join(context, ".dockerignore")]
        for c in cands:
            try:
                with open(c, encoding="utf-8", errors="replace") as f:
                    return cls(f.read().splitlines())
            except (FileNotFoundError, NotADirectoryError):
                continue
        return cls([])

    def ignored(self, rel: str) -> bool:
        if not self.patterns:
            return False
        parents = []
        p = rel
        while True:
            parents.append(p)
            p = posixpath.dirname(p)
            if not p:
                break
        hit = False
        for pat in self.patterns:
            if hit != pat.exclusion:
                continue      # cannot change the answer
            if any(pat.regex.match(x) for x in parents):
                hit = not pat.exclusion
        return hit

    def may_have_exceptions_under(self, rel: str) -> bool:
        """Whether some `!` pattern could re-include a path under the ignored directory
        `rel` (then the walk must still go in)."""
        return any(p.exclusion and (p.text.startswith(rel + "/") or "*" in p.text or
                                    "?" in p.text or "[" in p.text)
                   for p in self.patterns)
