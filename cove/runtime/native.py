"""The `native` file of a created container: what cove-runtime's native front
(cove/runtime/front.c) needs to do the short calls itself: init's pid and start time,
and the cgroup directories delete removes.

Written once, last, by create (the container handler's), atomically; never rewritten:
no later verb changes these. A container without it (being created, another
handler's, a restored one) has every call made by the Python runtime. Text, one
`key value` per line, so that the front reads it without a JSON parser; a key it does
not know sends the call to Python. The systemd driver's containers say so (`systemd
1`): their cgroups are systemd's to remove.
"""

from __future__ import annotations

from cove.runtime import lite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime.state import State

NAME = "native"
VERSION = "1"


def render(st: State) -> str | None:
    """The file's text, or None where the front has nothing it could do."""
    pid, start = st.pid, st.data.get("init_start")
    if pid <= 0 or not isinstance(start, int) or st.data.get("creating"):
        return None
    lines = [f"cove-native {VERSION}", f"pid {pid}", f"start {start}"]
    cg = st.data.get("cgroup") or {}
    if cg.get("systemd"):
        lines.append("systemd 1")
    else:
        lines += ["systemd 0", f"prune {1 if cg.get('prune_parent') else 0}"]
        for h in cg.get("hierarchies") or ():
            if not isinstance(h, dict):
                return None
            if h.get("skipped"):
                continue
            d = h.get("dir")
            if not isinstance(d, str) or not d.startswith("/") or "\n" in d:
                return None  # nothing the front could read safely: Python does it all
            lines.append(f"dir {d}")
    return "\n".join(lines) + "\n"


def write(st: State) -> None:
    """Write (tmp + rename) the file for a container create has just made. Best
    effort: where it cannot be written (a full disk), the Python runtime does every
    call, as for a container without it."""
    text = render(st)
    if text is None:
        return
    try:
        lite.write_atomic(lite.join(st.dir, NAME), text.encode())
    except OSError:
        pass
