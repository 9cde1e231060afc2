"""Go's text/template language, interpreted over Python values (dicts, lists, strings,
numbers, None) for docker's `--format`: `{{.Field}}`, `{{.A.B}}`, `{{$v := ...}}`,
pipelines (`{{.X | json}}`), `if`/`else if`/`else`, `range` (with `$i, $v :=` and
`else`), `with`, `{{- -}}` trimming and comments; the functions are in gofuncs, the
lexer in golex.

A list item may carry methods taking arguments (`{{.Label "k"}}`): `Method`s.
No `re`: `cove ps` loads this on every formatted call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cove.cli.gofuncs import FUNCS, HEADER_IDENTITY, NO_VALUE, FuncError, gostr, gotype, truth
from cove.cli.golex import SPACE, TemplateError, split, tokens
from cove.errors import CoveError

# -- parsing ----------------------------------------------------------------------------
# Nodes are tuples: ("text", s) ("out", pipe) ("if", pipe, then, else) ("range", pipe,
# body, else) ("with", pipe, body, else). A pipe is (decl, assign, cmds, line), a cmd a
# list of operands: ("field", names) ("var", name, names) ("ident", name) ("lit", value)
# ("sub", pipe, names).

Node = tuple[Any, ...]


class _Parser:
    def __init__(self, src: str) -> None:
        self.items = split(src)
        self.pos = 0

    def parse(self) -> list[Node]:
        nodes, stop = self.nodes()
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop[0]}}}}}", stop[1])
        return nodes

    def nodes(self) -> tuple[list[Node], tuple[str, int, list[tuple[str, Any]]] | None]:
        """Nodes up to an {{else}} or {{end}} (returned, with its line and its tokens)
        or the end of the template (None)."""
        out: list[Node] = []
        while self.pos < len(self.items):
            kind, body, line = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if body:
                    out.append(("text", body))
                continue
            stripped = body.strip(SPACE)
            if stripped.startswith("/*"):
                if not stripped.endswith("*/"):
                    raise TemplateError("comment ends before closing delimiter", line)
                continue
            toks = tokens(body, line)
            if not toks:
                raise TemplateError("missing value for command", line)
            word = toks[0][1] if toks[0][0] == "ident" else None
            if word in ("end", "else"):
                return out, (word, line, toks[1:])
            if word in ("if", "range", "with"):
                out.append(self.control(word, toks[1:], line))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"{{{{{word}}}}} is not supported by cove", line)
            else:
                out.append(("out", self.pipe(toks, line)))
        return out, None

    def control(self, word: str, toks: list[tuple[str, Any]], line: int) -> Node:
        pipe = self.pipe(toks, line, decl_ok=True)
        body, stop = self.nodes()
        els: list[Node] = []
        if stop is None:
            raise TemplateError(f"unexpected EOF in {word}", line)
        if stop[0] == "else":
            rest = stop[2]
            if rest and rest[0] == ("ident", "if") and word == "if":
                els = [self.control("if", rest[1:], stop[1])]
                return ("if", pipe, body, els)
            if rest:
                raise TemplateError(f"unexpected {rest[0][1]!r} in else", stop[1])
            els, stop = self.nodes()
            if stop is None or stop[0] != "end":
                raise TemplateError(f"expected end; found {stop[0] if stop else 'EOF'}",
                                    line)
        if stop[2]:
            raise TemplateError(f"unexpected {stop[2][0][1]!r} in end", stop[1])
        return (word, pipe, body, els)

    def pipe(self, toks: list[tuple[str, Any]], line: int, decl_ok: bool = True) -> Node:
        decl: list[str] = []
        assign = False
        k = 0  # `$x :=`, `$x =`, `$i, $v :=`
        if len(toks) >= 2 and toks[0][0] == "var" and not toks[0][1][1]:
            if toks[1][0] in (":=", "="):
                decl, assign, k = [toks[0][1][0]], toks[1][0] == "=", 2
            elif toks[1][0] == "," and len(toks) >= 4 and toks[2][0] == "var" \
                    and not toks[2][1][1] and toks[3][0] == ":=":
                decl, k = [toks[0][1][0], toks[2][1][0]], 4
        if decl and not decl_ok:
            raise TemplateError("unexpected declaration", line)
        cmds, i = self.cmds(toks, k, line)
        if i != len(toks):
            raise TemplateError(f"unexpected {toks[i][1]!r} in operand", line)
        if not cmds:
            raise TemplateError("missing value for command", line)
        return (decl, assign, cmds, line)

    def cmds(self, toks: list[tuple[str, Any]], i: int, line: int
             ) -> tuple[list[list[Node]], int]:
        cmds: list[list[Node]] = []
        cmd: list[Node] = []
        while i < len(toks):
            kind, val = toks[i]
            if kind == ")":
                break
            i += 1
            if kind == "|":
                if not cmd:
                    raise TemplateError("missing command", line)
                cmds.append(cmd)
                cmd = []
            elif kind == "(":
                sub, i = self.cmds(toks, i, line)
                if i >= len(toks) or toks[i][0] != ")":
                    raise TemplateError("unclosed left paren", line)
                i += 1
                names: list[str] = []
                if i < len(toks) and toks[i][0] == "field" and toks[i][1]:
                    names = toks[i][1]
                    i += 1
                cmd.append(("sub", ([], False, sub, line), names))
            elif kind == "field":
                cmd.append(("field", val))
            elif kind == "var":
                cmd.append(("var", val[0], val[1]))
            elif kind == "ident":
                if val in ("true", "false"):
                    cmd.append(("lit", val == "true"))
                elif val == "nil":
                    cmd.append(("lit", None))
                elif val in FUNCS:
                    cmd.append(("ident", val))
                else:
                    raise TemplateError(f'function "{val}" not defined', line)
            elif kind in ("str", "num"):
                cmd.append(("lit", val))
            else:
                raise TemplateError(f"unexpected {val!r} in operand", line)
        if cmd:
            cmds.append(cmd)
        elif cmds:
            raise TemplateError("missing command", line)
        return cmds, i


# -- running ----------------------------------------------------------------------------

class _Run:
    def __init__(self, root: Any, strict: bool, header: bool) -> None:
        self.root, self.strict, self.header = root, strict, header
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def nodes(self, nodes: list[Node], dot: Any, out: list[str]) -> None:
        for n in nodes:
            kind = n[0]
            if kind == "text":
                out.append(n[1])
            elif kind == "out":
                v = self.pipe(n[1], dot)
                if not n[1][0]:  # a declaration prints nothing
                    out.append(gostr(v))
            elif kind == "if":
                self.scoped(n[2] if truth(self.pipe(n[1], dot)) else n[3], dot, out)
            elif kind == "with":
                v = self.pipe(n[1], dot)
                self.scoped(n[2] if truth(v) else n[3], v if truth(v) else dot, out)
            elif kind == "range":
                self.range(n, dot, out)

    def scoped(self, nodes: list[Node], dot: Any, out: list[str]) -> None:
        self.vars.append({})
        try:
            self.nodes(nodes, dot, out)
        finally:
            self.vars.pop()

    def range(self, n: Node, dot: Any, out: list[str]) -> None:
        decl, _assign, cmds, line = n[1]
        v = self.pipe(([], False, cmds, line), dot)
        if isinstance(v, dict):
            pairs: list[tuple[Any, Any]] = [(k, v[k]) for k in sorted(v)]
        elif isinstance(v, list | tuple):
            pairs = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            pairs = [(i, i) for i in range(v)]
        elif v is None or v is NO_VALUE:
            pairs = []
        else:
            raise TemplateError(f"range can't iterate over {gostr(v)}", line, False)
        if not pairs:
            self.scoped(n[3], dot, out)
            return
        for key, item in pairs:
            scope: dict[str, Any] = {}
            if len(decl) == 1:
                scope[decl[0]] = item
            elif len(decl) == 2:
                scope[decl[0]], scope[decl[1]] = key, item
            self.vars.append(scope)
            try:
                self.nodes(n[2], item, out)
            finally:
                self.vars.pop()

    def pipe(self, pipe: Node, dot: Any) -> Any:
        decl, assign, cmds, line = pipe
        v: Any = NO_VALUE
        for i, cmd in enumerate(cmds):
            v = self.cmd(cmd, dot, line, v if i else NO_VALUE, i > 0)
        if decl:
            if assign:
                for scope in reversed(self.vars):
                    if decl[0] in scope:
                        scope[decl[0]] = v
                        break
                else:
                    raise TemplateError(f"undefined variable: {decl[0]}", line)
            else:
                self.vars[-1][decl[-1]] = v
        return v

    def cmd(self, cmd: list[Node], dot: Any, line: int, piped: Any, has_piped: bool) -> Any:
        head = cmd[0]
        if head[0] == "ident":
            args = [self.arg(a, dot, line) for a in cmd[1:]]
            if has_piped:
                args.append(piped)
            return self.call(head[1], args, line)
        if len(cmd) == 1 and not has_piped:
            return self.arg(head, dot, line)
        # a field with arguments: a method (`.Label "k"`), with the piped value last
        args = [self.arg(a, dot, line) for a in cmd[1:]]
        if has_piped:
            args.append(piped)
        if head[0] in ("field", "var"):
            return self.operand(head, dot, line, args)
        what = gostr(self.arg(head, dot, line))
        raise TemplateError(f"can't give argument to non-function {what}", line, False)

    def arg(self, a: Node, dot: Any, line: int) -> Any:
        if a[0] == "lit":
            return a[1]
        if a[0] == "ident":
            return self.call(a[1], [], line)
        if a[0] == "sub":
            v = self.pipe(a[1], dot)
            return self.chain(v, a[2], line, [], "(...)")
        return self.operand(a, dot, line, [])

    def operand(self, a: Node, dot: Any, line: int, args: list[Any]) -> Any:
        if a[0] == "field":
            return self.chain(dot, a[1], line, args, "")
        name = a[1]
        for scope in reversed(self.vars):
            if name in scope:
                return self.chain(scope[name], a[2], line, args, name)
        raise TemplateError(f"undefined variable: {name}", line)

    def chain(self, v: Any, names: list[str], line: int, args: list[Any], base: str) -> Any:
        where = base + "".join("." + n for n in names) or "."
        for i, name in enumerate(names):
            last = i == len(names) - 1
            if self.header:  # the header row: a column's name, or nothing
                v = v.get(name, "") if isinstance(v, dict) else ""
                if callable(v):
                    return getattr(v, "header", name.upper())
                continue
            if isinstance(v, dict):
                if name in v:
                    v = v[name]
                elif self.strict:
                    raise TemplateError(f'executing "" at <{where}>: can\'t evaluate field '
                                        f"{name}", line, False)
                else:
                    v = NO_VALUE
            elif v is None or v is NO_VALUE:
                raise TemplateError(f'executing "" at <{where}>: nil pointer evaluating '
                                    f"interface {{}}.{name}", line, False)
            else:
                raise TemplateError(f'executing "" at <{where}>: can\'t evaluate field '
                                    f"{name} in type {gotype(v)}", line, False)
            if callable(v):
                v = v(*(args if last else []))
            elif last and args:
                raise TemplateError(f'executing "" at <{where}>: {name} has arguments but '
                                    "cannot be invoked as function", line, False)
        if not names and args and not self.header:
            raise TemplateError(f"can't give argument to non-function {where}", line, False)
        return v

    def call(self, name: str, args: list[Any], line: int) -> Any:
        if self.header and name in HEADER_IDENTITY:
            return args[0] if args else ""
        fn = FUNCS[name]
        try:
            return fn(*args)
        except TemplateError:
            raise
        except CoveError as e:
            raise TemplateError(f'executing "" at <{name}>: {e.why or e.what}', line,
                                False) from None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            why = str(e) if isinstance(e, FuncError) else \
                f"wrong number or type of args for {name}: got {len(args)}"
            raise TemplateError(f'executing "" at <{name}>: error calling {name}: {why}',
                                line, False) from None


class Template:
    """A parsed template; `render(data)` runs it. `strict`: a missing field is an error
    (docker's typed list contexts) rather than `<no value>` (inspect's maps)."""

    def __init__(self, src: str, strict: bool = False) -> None:
        self.src = src
        self.strict = strict
        self.nodes = _Parser(src).parse()

    def render(self, data: Any, header: bool = False) -> str:
        out: list[str] = []
        _Run(data, self.strict, header).nodes(self.nodes, data, out)
        return "".join(out)


class Method:
    """A list item's method with arguments (`{{.Label "com.example"}}`), and its column
    header."""

    def __init__(self, fn: Callable[..., Any], header: str) -> None:
        self.fn, self.header = fn, header

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)
