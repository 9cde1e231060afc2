"""The lexer of cove/cli/gotemplate.py's Go text/template: a template split into text
and actions (`split`, with `{{- -}}` trimming), an action's body into tokens (`tokens`:
fields, variables, identifiers, strings, numbers, `|`, `:=`, parentheses), and the one
error type. No `re`: `cove ps` loads this on every formatted call."""

from __future__ import annotations

from typing import Any

from cove.errors import CoveError


class TemplateError(CoveError):
    """A template that does not parse, or fails while it runs: one line, as docker's
    `template parsing error: template: :1: ...`."""

    def __init__(self, why: str, line: int = 1, _parsing: bool = True) -> None:
        # docker says "template parsing error" for failures while running too
        super().__init__("template parsing error", f"template: :{line}: {why}")


SPACE = " \t\r\n"


def split(src: str) -> list[tuple[str, str, int]]:
    """The template's pieces: ("text", s, line) and ("action", inside, line), with the
    `{{-` and `-}}` trimming applied to the text beside them."""
    out: list[tuple[str, str, int]] = []
    i, line = 0, 1
    while True:
        j = src.find("{{", i)
        if j < 0:
            out.append(("text", src[i:], line))
            return out
        text = src[i:j]
        body_start = j + 2
        if src.startswith("-", body_start) and src[body_start + 1:body_start + 2] in \
                tuple(SPACE):
            text = text.rstrip(SPACE)
            body_start += 2
        out.append(("text", text, line))
        line += src.count("\n", i, j)
        k = _close(src, body_start, line)
        body = src[body_start:k]
        end = k + 2
        if body.endswith("-") and body[-2:-1] in tuple(SPACE):
            body = body[:-1]
            while end < len(src) and src[end] in SPACE:
                end += 1
        out.append(("action", body, line))
        line += src.count("\n", j, end)
        i = end


def _close(src: str, i: int, line: int) -> int:
    """Where the action starting at `i` ends (its `}}`), past strings and comments."""
    n = len(src)
    while i < n:
        c = src[i]
        if src.startswith("}}", i):
            return i
        if src.startswith("/*", i):
            k = src.find("*/", i + 2)
            if k < 0:
                raise TemplateError("unclosed comment", line)
            i = k + 2
            continue
        if c in "\"'`":
            k = i + 1
            while k < n and src[k] != c:
                if src[k] == "\n" and c != "`":
                    raise TemplateError("unterminated quoted string", line)
                k += 2 if src[k] == "\\" and c != "`" else 1
            if k >= n:
                raise TemplateError("unterminated quoted string", line)
            i = k + 1
            continue
        i += 1
    raise TemplateError("unclosed action", line)


_IDCHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


def tokens(body: str, line: int) -> list[tuple[str, Any]]:
    """An action's tokens: (kind, value) with kinds field, var, ident, str, num, and the
    punctuation itself ( ) | := = ,"""
    toks: list[tuple[str, Any]] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c in SPACE:
            i += 1
        elif c in "()|,":
            toks.append((c, c))
            i += 1
        elif body.startswith(":=", i):
            toks.append((":=", ":="))
            i += 2
        elif c == "=":
            toks.append(("=", "="))
            i += 1
        elif c in "\"`":
            k = _close_quote(body, i, line)
            toks.append(("str", _unquote(body[i:k + 1], line)))
            i = k + 1
        elif c == "'":
            k = _close_quote(body, i, line)
            s = _unquote('"' + body[i + 1:k] + '"', line)
            if len(s) != 1:
                raise TemplateError(f"malformed character constant: {body[i:k + 1]}", line)
            toks.append(("num", ord(s)))
            i = k + 1
        elif c == "." or c == "$":
            k = i + 1
            while k < n and (body[k] in _IDCHARS or body[k] == "."):
                k += 1
            word = body[i:k]
            if c == "." and len(word) > 1 and word[1].isdigit():
                toks.append(("num", _number(word, line)))
            elif c == "$":
                name, _, rest = word.partition(".")
                toks.append(("var", (name, [x for x in rest.split(".") if x] if rest
                                     else [])))
            else:
                parts = word[1:].split(".") if word != "." else []
                if any(not p for p in parts):
                    raise TemplateError(f"unexpected . after term {word!r}", line)
                toks.append(("field", parts))
            i = k
        elif c.isdigit() or (c in "+-" and i + 1 < n and body[i + 1].isdigit()):
            k = i + 1
            while k < n and (body[k] in _IDCHARS or (body[k] in ".+-" and
                             body[k - 1] in "eEpP")):
                k += 1
            toks.append(("num", _number(body[i:k], line)))
            i = k
        elif c in _IDCHARS:
            k = i
            while k < n and body[k] in _IDCHARS:
                k += 1
            word = body[i:k]
            if k < n and body[k] == ".":  # a method on a function's result is Go's error
                raise TemplateError(f"unexpected . after term {word!r}", line)
            toks.append(("ident", word))
            i = k
        else:
            raise TemplateError(f"unexpected {c!r} in command", line)
    return toks


def _close_quote(body: str, i: int, line: int) -> int:
    q, k = body[i], i + 1
    while k < len(body) and body[k] != q:
        k += 2 if body[k] == "\\" and q != "`" else 1
    if k >= len(body):
        raise TemplateError("unterminated quoted string", line)
    return k


def _unquote(s: str, line: int) -> str:
    if s[0] == "`":
        return s[1:-1]
    out, i = [], 1
    esc = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
           "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
    while i < len(s) - 1:
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            try:
                out.append(chr(int(s[i + 2:i + 2 + width], 16)))
            except ValueError:
                raise TemplateError(f"invalid syntax in {s}", line) from None
            i += 2 + width
        elif nxt in esc:
            out.append(esc[nxt])
            i += 2
        else:
            raise TemplateError(f"invalid syntax in {s}", line)
    return "".join(out)


def _number(word: str, line: int) -> int | float:
    w = word.replace("_", "")
    try:
        return int(w, 0)
    except ValueError:
        pass
    try:
        return float(w)
    except ValueError:
        raise TemplateError(f"bad number syntax: {word!r}", line) from None
