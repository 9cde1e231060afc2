"""cgroup managers: v1, v2 and hybrid behind one interface."""

from __future__ import annotations

from cove.runtime.cgroups.base import Manager
from cove.runtime.cgroups.detect import detect_layout
from cove.runtime.cgroups.resolve import open_manager, open_manager_from_state

__all__ = ["Manager", "detect_layout", "open_manager", "open_manager_from_state"]
