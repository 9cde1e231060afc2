"""`--format`: Go templates as docker's CLI has them, and docker's tables.

Docker users carry their `--format` strings from one engine to the next: the templates
are Go's text/template language (cove/cli/gotemplate.py, functions and printing in
gofuncs.py), run over the same fields docker's commands offer.

A list command's format is docker's: `table` first means a header row and columns
aligned as Go's tabwriter aligns them (at least 10 wide, 3 spaces apart), `json` one
JSON object a line (where the command has no JSON of its own), anything else one
rendered template per item; `\\t` and `\\n` written literally mean a tab and a newline.

No `re`, no `json` at import: `cove ps` loads this on every call.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from cove.cli.gofuncs import to_json
from cove.cli.golex import TemplateError
from cove.cli.gotemplate import Method, Template
from cove.engine.units import human_duration

__all__ = ["Method", "Template", "TemplateError", "ago", "ellipsis", "human_duration",
           "human_size", "render_each", "render_list", "tabwrite", "to_json", "unescape"]


# -- the public side --------------------------------------------------------------------

def tabwrite(lines: Iterable[str], minwidth: int = 10, padding: int = 3) -> str:
    """Go's tabwriter as docker sets it up (minwidth 10, padding 3, spaces): each
    tab-terminated cell padded to its column's widest cell plus padding; a line's last
    cell is not part of any column. Columns are aligned over runs of lines having them."""
    rows = [line.split("\t") for line in lines]
    ncols = max((len(r) - 1 for r in rows), default=0)
    widths = [[0] * (len(r) - 1) for r in rows]
    for col in range(ncols):
        i = 0
        while i < len(rows):
            if len(rows[i]) - 1 <= col:
                i += 1
                continue
            j = i
            w = minwidth
            while j < len(rows) and len(rows[j]) - 1 > col:
                w = max(w, len(rows[j][col]) + padding)
                j += 1
            for k in range(i, j):
                widths[k][col] = w
            i = j
    out = []
    for r, ws in zip(rows, widths, strict=True):
        out.append("".join(c.ljust(w) for c, w in zip(r, ws, strict=False)) + r[-1])
    return "\n".join(out) + ("\n" if out else "")


def unescape(fmt: str) -> str:
    r"""docker's list formats take `\t` and `\n` written out as a tab and a newline."""
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def render_list(fmt: str, items: list[dict[str, Any]], default: str,
                headers: dict[str, str], out: Any = None) -> None:
    """Print `items` as docker's list commands print them for `--format FMT` (""
    meaning the command's default table `default`): `table ...` with a header row,
    `json` one object a line, else the template once per item."""
    out = out or sys.stdout
    if not fmt or fmt == "table":
        fmt = default
    if fmt == "json":
        for it in items:
            out.write(to_json(it) + "\n")
        return
    table = fmt.startswith("table")
    body = unescape(fmt[5:] if table else fmt).strip(" ")
    t = Template(body, strict=True)
    rendered = [t.render(it) for it in items]
    if table:
        head = t.render(headers, header=True)
        out.write(tabwrite([head, *"\n".join(rendered).split("\n")] if rendered
                           else [head]))
    else:
        for r in rendered:
            out.write(r + "\n")


def render_each(fmt: str, values: list[Any], out: Any = None) -> None:
    """`inspect -f`, `info -f`, `version -f`: the template once per value, each followed
    by a newline; a value's missing field prints `<no value>`."""
    out = out or sys.stdout
    t = Template(fmt)
    text = "".join(t.render(v) + "\n" for v in values)
    out.write(text)


# -- docker's human units ---------------------------------------------------------------



def ago(t: float) -> str:
    return human_duration(max(0.0, time.time() - t)) + " ago"


def human_size(n: float | None, precision: int = 4) -> str:
    """go-units' HumanSizeWithPrecision: decimal units, %.<precision>g ("4.27MB")."""
    if n is None:
        return "-"
    f = float(n)
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while f >= 1000 and i < len(units) - 1:
        f /= 1000
        i += 1
    return f"{f:.{precision}g}{units[i]}"


def ellipsis(s: str, width: int) -> str:
    """docker's Ellipsis: cut to `width` characters, the last one "…"."""
    if len(s) <= width:
        return s
    return s[:width - 1] + "…" if width > 1 else s[:width]
