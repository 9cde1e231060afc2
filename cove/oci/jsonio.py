"""JSON without `json`: the stdlib's json package imports `re` (about 10 ms of start-up);
its C accelerator `_json` does not. cove-runtime reads config.json and writes state on
every call, so it uses these instead.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WS = " \t\n\r"


def _constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Ctx())  # type: ignore[arg-type]


class JSONError(ValueError):
    """Malformed JSON; the message gives line and column."""


def _where(s: str, idx: int) -> str:
    line = s.count("\n", 0, idx) + 1
    col = idx - (s.rfind("\n", 0, idx) + 1) + 1
    return f"line {line} column {col}"


def loads(s: str | bytes) -> Any:
    """Parse one JSON document."""
    if isinstance(s, bytes):
        try:
            s = s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONError(f"invalid UTF-8: {e.reason}") from None
    idx = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, idx)
    except StopIteration as e:
        raise JSONError(f"unexpected input at {_where(s, e.value)}") from None
    except (ValueError, SystemError):
        # The C scanner raises json.decoder.JSONDecodeError only when json.decoder is
        # already imported (else a SystemError): on this error path, pay for the import.
        import json

        try:
            json.loads(s)
        except json.JSONDecodeError as e:
            raise JSONError(f"{e.msg} at {_where(s, e.pos)}") from None
        raise JSONError("malformed JSON") from None
    finally:
        _Ctx.memo.clear()
    if s[end:].strip(_WS):
        raise JSONError(f"extra data at {_where(s, end + len(s[end:]) - len(s[end:].lstrip(_WS)))}")
    return obj


_enc_str = _json.encode_basestring_ascii


def _unencodable(obj: Any) -> Any:
    raise TypeError(f"cannot encode {type(obj).__name__}")


# The C encoder for the compact form (state files, hook state, cache keys): the same
# output as the Python code below, several times faster on large documents.
_c_compact = _json.make_encoder(None, _unencodable, _enc_str, None, ":", ",", False, False,
                                False)


def dumps(obj: Any, indent: int | None = None, _level: int = 0) -> str:
    """Serialise `obj` (dicts, lists, str, int, float, bool, None) as compact or indented JSON."""
    if indent is None and _level == 0:
        try:
            return "".join(_c_compact(obj, 0))
        except ValueError:
            raise ValueError("cannot encode non-finite float") from None
    if isinstance(obj, str):
        return _enc_str(obj)
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("cannot encode non-finite float")
        return float.__repr__(obj)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{_enc_str(str(k))}:{' ' if indent is not None else ''}"
                 f"{dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return _join(items, "{", "}", indent, _level)
    if isinstance(obj, list | tuple):
        if not obj:
            return "[]"
        return _join([dumps(v, indent, _level + 1) for v in obj], "[", "]", indent, _level)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _join(items: list[str], open_: str, close: str, indent: int | None, level: int) -> str:
    if indent is None:
        return open_ + ",".join(items) + close
    pad = "\n" + " " * (indent * (level + 1))
    return open_ + pad + ("," + pad).join(items) + "\n" + " " * (indent * level) + close
