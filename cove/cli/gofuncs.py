"""Go's side of templates for `--format`: values printed as Go's fmt prints them
(`[a b]`, `map[k:v]`, `<no value>`, `1e+06`: scripts parse what docker prints), Go's
truth, and the template functions: docker's (`json`, `join`, `split`, `title`, `lower`,
`upper`, `pad`, `truncate`) and Go's (`index`, `len`, `print`, `println`, `printf`,
`eq`, `ne`, `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NO_VALUE = object()  # Go's invalid reflect.Value: printed "<no value>"


# -- printing as Go's fmt %v ------------------------------------------------------------

def _gofloat(f: float) -> str:
    """Go's %v of a float64 (strconv's 'g', shortest): the fewest digits that read
    back, in exponent form below 1e-4 and from 1e6 (`1e+06`, as a JSON-decoded number
    prints in docker's templates)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if f < 0 or (f == 0 and str(f).startswith("-")) else ""
    r = repr(abs(f))
    mant, _, e = r.partition("e")
    ip, _, fp = mant.partition(".")
    if e:
        exp, digs = int(e), (ip + fp).rstrip("0") or "0"
    elif ip != "0":
        exp, digs = len(ip) - 1, (ip + fp).rstrip("0") or "0"
    else:
        stripped = fp.lstrip("0")
        if not stripped.rstrip("0"):
            return sign + "0"
        exp, digs = -(len(fp) - len(stripped) + 1), stripped.rstrip("0")
    if exp < -4 or exp >= 6:
        m = digs[0] + ("." + digs[1:] if len(digs) > 1 else "")
        return f"{sign}{m}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digs}"
    if len(digs) <= exp + 1:
        return sign + digs + "0" * (exp + 1 - len(digs))
    return f"{sign}{digs[:exp + 1]}.{digs[exp + 1:]}"


def gostr(v: Any, top: bool = True) -> str:
    """A value as Go's fmt prints it with %v."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<no value>" if top else "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _gofloat(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{gostr(v[k], False)}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(gostr(x, False) for x in v) + "]"
    return str(v)


def to_json(v: Any) -> str:
    """docker's `json` function: compact, no HTML escaping, no trailing newline."""
    import json
    return json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))


def _plain(v: Any) -> Any:
    """Data without the methods a list item carries (`.Label "k"`): `{{json .}}` shows
    fields only, as Go's encoder does."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if not callable(x)}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)  # Go's encoder writes 30, not 30.0
    return None if v is NO_VALUE else v


def truth(v: Any) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    return v is not NO_VALUE and bool(v)


def gotype(v: Any) -> str:
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, list | tuple):
        return "[]interface {}"
    return type(v).__name__


# -- functions --------------------------------------------------------------------------

class FuncError(ValueError):
    """A function's own complaint (not a wrong call), shown as it is."""


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            if k in v:
                v = v[k]
            else:  # Go's zero value: "" for a map of strings (labels), else no value
                v = "" if all(isinstance(x, str) for x in v.values()) else NO_VALUE
        elif isinstance(v, list | tuple | str):
            if not isinstance(k, int) or isinstance(k, bool):
                raise FuncError(f"cannot index slice/array with type {gotype(k)}")
            if not 0 <= k < len(v):
                raise FuncError(f"index out of range: {k}")
            v = v[k]
        elif v is None or v is NO_VALUE:
            raise FuncError("index of untyped nil")
        else:
            raise FuncError(f"can't index item of type {gotype(v)}")
    return v


def _len(v: Any) -> int:
    if isinstance(v, str | list | tuple | dict):
        return len(v)
    raise FuncError(f"len of type {gotype(v)}")


def _join(v: Any, sep: str) -> str:
    if isinstance(v, str):
        return v
    if not isinstance(v, list | tuple):
        raise FuncError(f"wrong type for value; expected []string; got {gotype(v)}")
    return sep.join(gostr(x, False) for x in v)


def _print(*args: Any) -> str:
    """Go's fmt.Sprint: spaces between operands when neither is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += gostr(a)
    return out


def _println(*args: Any) -> str:
    return " ".join(gostr(a) for a in args) + "\n"


def _quote(s: str) -> str:
    import json
    return json.dumps(s, ensure_ascii=False).replace("\\u007f", "\\x7f")


def _printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: v s d q t f g e x X o b c %."""
    out: list[str] = []
    i, n, ai = 0, len(fmt), 0
    while i < n:
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        j = i + 1
        while j < n and fmt[j] in "+-# 0":
            j += 1
        while j < n and (fmt[j].isdigit() or fmt[j] == "."):
            j += 1
        if j >= n:
            out.append("%!(NOVERB)")
            break
        flags, verb = fmt[i + 1:j], fmt[j]
        i = j + 1
        if verb == "%":
            out.append("%")
            continue
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[ai]
        ai += 1
        out.append(_verb(flags, verb, a))
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{gotype(a)}={gostr(a)}" for a in args[ai:])
                   + ")")
    return "".join(out)


def _verb(flags: str, verb: str, a: Any) -> str:
    num = isinstance(a, int | float) and not isinstance(a, bool)
    if verb in "dxXob" and isinstance(a, int) and not isinstance(a, bool):
        return ("%" + flags + {"d": "d", "x": "x", "X": "X", "o": "o", "b": "d"}[verb]) % a \
            if verb != "b" else format(a, flags + "b")
    if verb in "feEgG" and num:
        return str(("%" + flags + verb) % a)
    if verb == "c" and isinstance(a, int):
        return chr(a)
    if verb == "t" and isinstance(a, bool):
        return "true" if a else "false"
    if verb in "vs" or (verb == "t" and not isinstance(a, bool)):
        s = gostr(a)
    elif verb == "q":
        s = _quote(gostr(a))
    else:
        return f"%!{verb}({gotype(a)}={gostr(a)})"
    return ("%" + flags.replace("0", "") + "s") % s


def _cmp(op: str) -> Callable[..., bool]:
    def fn(a: Any, *bs: Any) -> bool:
        if op == "eq":
            if not bs:
                raise FuncError("missing argument for comparison")
            return any(_eq(a, b) for b in bs)
        if len(bs) != 1:
            raise FuncError(f"wrong number of args for {op}: want 2 got {len(bs) + 1}")
        b = bs[0]
        if op == "ne":
            return not _eq(a, b)
        if not ((isinstance(a, str) and isinstance(b, str))
                or (isinstance(a, int | float) and isinstance(b, int | float)
                and not isinstance(a, bool) and not isinstance(b, bool))):
            raise FuncError("incompatible types for comparison")
        import operator
        return bool(getattr(operator, op)(a, b))
    return fn


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        raise FuncError("incompatible types for comparison")
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    if type(a) is not type(b) and a is not None and b is not None:
        raise FuncError("incompatible types for comparison")
    return bool(a == b)


def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _str(f: Callable[[str], str]) -> Callable[[Any], str]:
    return lambda v: f(gostr(v))


def _title(s: str) -> str:
    """strings.Title: the first letter of each space-separated word upper-cased."""
    out, prev = [], " "
    for c in s:
        out.append(c.upper() if not (prev.isalnum() or prev in "_'") else c)
        prev = c
    return "".join(out)


def _pad(s: Any, left: int, right: int) -> str:
    return " " * left + gostr(s) + " " * right


def _truncate(s: Any, n: int) -> str:
    t = gostr(s)
    return t[:n] if len(t) > n else t


def _split_fn(s: Any, sep: str) -> list[str]:
    t = gostr(s)
    return list(t) if sep == "" else t.split(sep)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": to_json, "join": _join, "split": _split_fn, "title": _str(_title),
    "lower": _str(str.lower), "upper": _str(str.upper), "pad": _pad, "truncate": _truncate,
    "index": _index, "len": _len, "print": _print, "println": _println, "printf": _printf,
    "eq": _cmp("eq"), "ne": _cmp("ne"), "lt": _cmp("lt"), "le": _cmp("le"),
    "gt": _cmp("gt"), "ge": _cmp("ge"), "and": _and, "or": _or,
    "not": lambda v: not truth(v),
}
# docker's header functions: in a table's header row these pass the header through
HEADER_IDENTITY = ("json", "join", "split", "title", "lower", "upper", "pad", "truncate")
