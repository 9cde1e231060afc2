"""`list`: every container under the state root."""

from __future__ import annotations

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as runtime_state


def states(root: str) -> list[dict[str, object]]:
    out = []
    for cid in runtime_state.list_ids(root):
        try:
            out.append(runtime_state.load(root, cid).oci())
        except CoveError:
            continue  # removed while we looked
    return out


def render(root: str, fmt: str, quiet: bool) -> str:
    items = states(root)
    if quiet:
        return "".join(f"{i['id']}\n" for i in items)
    if fmt == "json":
        return jsonio.dumps(items) + "\n"
    if fmt != "table":
        raise CoveError(f"--format {fmt}", "expected table or json")
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    rows += [[str(i["id"]), str(i["pid"]), str(i["status"]), str(i["bundle"]),
              str(i["created"]), str(i["owner"])] for i in items]
    return tabulate(rows)


def tabulate(rows: list[list[str]]) -> str:
    """Columns as Go's tabwriter(minwidth=12, padding=3) lays them out for runc."""
    widths = [max(12, max(len(r[c]) for r in rows) + 3) for c in range(len(rows[0]))]
    return "".join("".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False))
                   + r[-1] + "\n" for r in rows)
