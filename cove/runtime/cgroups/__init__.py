"""cgroup managers: v1, v2 and hybrid behind one interface.

The names below load on first use, so that `cove.runtime.cgroups.prewarm` can be
imported (and started) before the managers' modules are.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime.cgroups.base import Manager
    from cove.runtime.cgroups.detect import detect_layout
    from cove.runtime.cgroups.resolve import open_manager, open_manager_from_state
else:
    _WHERE = {"Manager": "base", "detect_layout": "detect", "open_manager": "resolve",
              "open_manager_from_state": "resolve"}

    def __getattr__(name: str) -> object:
        if name not in _WHERE:
            raise AttributeError(name)
        # __import__, not importlib: importlib itself costs 1.5 ms of start-up.
        mod = __import__(f"cove.runtime.cgroups.{_WHERE[name]}", fromlist=[name])
        return getattr(mod, name)

__all__ = ["Manager", "detect_layout", "open_manager", "open_manager_from_state"]
