"""Hybrid hosts: v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified).

A controller is bound to one hierarchy at a time, so the unified mount can
only serve what no v1 hierarchy has taken (hugetlb on Cove's build hosts).
The unified directory is always created, as runc does, so that the container
sees its own cgroup there too; its controllers are enabled only when a
resource actually needs them, to leave the host's subtree_control alone.
"""

from __future__ import annotations

# Not `from typing import ...`: typing costs import time on the hot path,
# and type checkers honour any constant named TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime.cgroups.detect import Hierarchy


def v2_share(v1: list[Hierarchy], available: list[str]) -> list[str]:
    """The controllers of the cgroup2 mount that no v1 hierarchy holds."""
    taken = {c for h in v1 for c in h.controllers}
    return [c for c in available if c not in taken]


def enable_eagerly(layout: str) -> bool:
    """Whether create() enables every v2 controller in the parents' subtree_control.

    On a v2 host that is what runc does; on a hybrid host the unified tree
    belongs to the host's init, so Cove enables controllers there lazily.
    """
    return layout == "v2"
