"""The signals an attached `cove run` or `cove attach` passes on to its container
(docker's --sig-proxy): one small module, so that run and attach share it without
importing each other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# The signals an attached `cove run` passes on (docker's --sig-proxy, the runtime's own
# list): those that would end it and leave its container running behind it.
PROXIED = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM


@contextlib.contextmanager
def signals(handler: Any, which: tuple[int, ...] = PROXIED) -> Iterator[None]:
    """`handler` for `which` while the block runs; nothing when `handler` is None or
    outside the main thread (only it may set handlers: a program using the API from a
    thread keeps its own)."""
    import signal
    import threading
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    try:
        for s in which:
            old[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
