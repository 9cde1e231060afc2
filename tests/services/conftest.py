"""The services tests' own fixture (`downs`). The compose projects run by `cove` inside a
network namespace the test makes (tests/conftest.py's `netns` and `cove` fixtures); the
web images, the looping client and the compose file are tests/lib/services.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lib.engine import Cove


@pytest.fixture
def downs() -> Iterator[list[tuple[Cove, Path]]]:
    """(cove, compose file) pairs to take down at teardown, before the `cove` fixture's
    own clean-up: a test that fails half way leaves a desired state that the monitor
    would otherwise keep bringing back while that clean-up removes containers."""
    todo: list[tuple[Cove, Path]] = []
    yield todo
    for c, f in todo:
        c("down", "-v", "-f", str(f), check=False, timeout=120)
