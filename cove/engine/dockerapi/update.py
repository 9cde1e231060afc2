"""POST /containers/{id}/update (`docker update`): resources and the restart policy,
through the engine's update (cove/engine/ops.py: live through the runtime while the
container runs, and kept in its record and bundle for its next start).

docker's CLI sends every field of UpdateConfig, zero where the user set nothing: a
zero (or null, or empty) field is "unchanged", as dockerd reads it. A field cove
cannot apply is refused with 400 naming it, unless it is zero: never a silent ignore
of a limit someone asked for.
"""

from __future__ import annotations

from typing import Any

from cove.engine.dockerapi.common import Ctx, call, lookup
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, jsonr
from cove.errors import CoveError

# what ops.update applies
_APPLIED = ("Memory", "MemorySwap", "NanoCpus", "CpuQuota", "CpuPeriod", "CpuShares",
            "PidsLimit", "RestartPolicy")


def _int(body: dict[str, Any], key: str) -> int:
    v = body.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"{key}: expected an integer")
    return v


def update_args(body: dict[str, Any]) -> dict[str, Any]:
    """ops.update's keywords from docker's UpdateConfig; 400 for what can't be done."""
    for key, v in body.items():
        if key not in _APPLIED and v not in (None, 0, "", [], {}, False):
            raise ApiError(400, f"{key}: not supported by cove's update (supported: "
                                f"{', '.join(_APPLIED)})")
    kw: dict[str, Any] = {}
    if mem := _int(body, "Memory"):
        kw["memory"] = str(mem)
    if swap := _int(body, "MemorySwap"):
        kw["memory_swap"] = str(swap)
    nano, quota, period = _int(body, "NanoCpus"), _int(body, "CpuQuota"), \
        _int(body, "CpuPeriod")
    if nano and quota:
        raise ApiError(400, "Conflicting options: Nano CPUs and CPU Quota cannot both be "
                            "set")
    if nano:
        kw["cpus"] = nano / 1e9
    elif quota > 0:
        kw["cpus"] = quota / (period or 100_000)
    elif period and period != 100_000:
        raise ApiError(400, "CpuPeriod: only with CpuQuota (cove sets a 100000 us period)")
    if shares := _int(body, "CpuShares"):
        kw["cpu_shares"] = shares
    if body.get("PidsLimit") is not None:
        kw["pids_limit"] = _int(body, "PidsLimit")
    rp = body.get("RestartPolicy")
    if rp is not None and not isinstance(rp, dict):
        raise ApiError(400, "RestartPolicy: expected an object")
    if rp and rp.get("Name"):
        name, n = rp["Name"], rp.get("MaximumRetryCount") or 0
        if not isinstance(name, str) or isinstance(n, bool) or not isinstance(n, int):
            raise ApiError(400, "RestartPolicy: expected a Name and a MaximumRetryCount")
        kw["restart"] = f"{name}:{n}" if name == "on-failure" and n else name
    return kw


def register(r: Router, ctx: Ctx) -> None:
    async def update(req: Request) -> Result:
        from cove.engine import ops
        name = lookup(ctx.root, req.params["id"])
        kw = update_args(req.obj())
        if not kw:
            return jsonr({"Warnings": []})
        try:
            await call(ops.update, ctx.root, name, **kw)
        except CoveError as e:
            raise ApiError(400, str(e)) from None
        return jsonr({"Warnings": []})

    r.add("POST", "/containers/{id}/update", update)
