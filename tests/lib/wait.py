"""The one poll loop of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """`wait_for` ran out of time (an AssertionError: a test that waits fails with it;
    a clean-up that only waits its best catches it)."""


def wait_for(cond: Callable[..., T], timeout: float = 20.0, what: str = "",
             interval: float = 0.1) -> T:
    """Call `cond` every `interval` seconds until it returns something true, and return
    that. Raise WaitTimeout naming `what` once `timeout` seconds have passed; `cond` is
    always called once more after the deadline, so that a slow last poll is not lost.
    (`cond` is called with no arguments; Callable[..., T] lets a lambda bind loop
    variables as defaults, `lambda h=host: ...`, which Callable[[], T] refuses.)"""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for "
                              f"{what or getattr(cond, '__qualname__', repr(cond))}")
        time.sleep(interval)
