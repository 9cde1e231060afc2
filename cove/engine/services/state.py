"""Each project's desired state, on disk: `<root>/projects/<project>/desired.json`.

This file, not any process, is what the engine keeps true: the CLI (`up`, `scale`,
`rollout`, `rollback`) and the autoscaler change it, and `reconcile` — run by the
monitor's children and by the CLI — makes the replicas match it. It is written
atomically (temp file, rename: cove/engine/state.py's `write_atomic`) under an flock on
`lock`, so a SIGKILL at any moment leaves either the old or the new state; a pass of
`reconcile` holds `reconcile.lock` instead, so short updates never wait for a pass.

The document:

    {"project": NAME, "workdir": DIR, "file": PATH, "networks": [...], "volumes": [...],
     "services": {SVC: {"spec": {...compose model...}, "hash": H, "generation": G,
                        "replicas": N, "previous": {"spec", "hash"} | null,
                        "rollout": {"state": "updating|paused|done|rolled_back",
                                    "reason": ..., "at": T} | null,
                        "applied": [backend IPs last given to the lb]}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from cove.engine import events
from cove.engine import state as engine_state
from cove.errors import CoveError

DESIRED = "desired.json"


def pdir(root: str, project: str) -> str:
    return os.path.join(root, "projects", project)


def projects(root: str) -> list[str]:
    """The projects that have a desired state."""
    base = os.path.join(root, "projects")
    try:
        return sorted(p for p in os.listdir(base)
                      if os.path.exists(os.path.join(base, p, DESIRED)))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def locked(root: str, project: str, name: str = "lock", block: bool = True
           ) -> Iterator[bool]:
    """An flock on the project's `name` file; yields False (holding nothing) when
    `block` is off and another process has it."""
    d = pdir(root, project)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def load(root: str, project: str) -> dict[str, Any] | None:
    """The project's desired state, or None when it has none (never `up`, or `down`)."""
    try:
        with open(os.path.join(pdir(root, project), DESIRED)) as f:
            d: dict[str, Any] = json.load(f)
            return d
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CoveError(f"project {project}", f"its desired state is unreadable: {e}") \
            from None


def save(root: str, project: str, d: dict[str, Any]) -> None:
    os.makedirs(pdir(root, project), mode=0o700, exist_ok=True)
    engine_state.write_atomic(os.path.join(pdir(root, project), DESIRED),
                              json.dumps(d, indent=1, sort_keys=True).encode())


def update(root: str, project: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Change the desired state under its lock; `fn` may raise to change nothing."""
    with locked(root, project):
        d = load(root, project)
        if d is None:
            raise CoveError(f"project {project}", "not up (no desired state)")
        fn(d)
        save(root, project, d)
        return d


def service(d: dict[str, Any], svc: str, project: str) -> dict[str, Any]:
    try:
        s: dict[str, Any] = d["services"][svc]
        return s
    except KeyError:
        raise CoveError(f"service {svc}", f"no such service in project {project}") \
            from None


def emit(root: str, project: str, svc: str, action: str, reason: str, **attrs: object
         ) -> None:
    """A `service` event (`cove events --filter type=service`), with the reason."""
    events.emit(root, "service", action, f"{project}_{svc}", project=project, name=svc,
                reason=reason, **attrs)


def set_replicas(root: str, project: str, service_name: str, n: int, reason: str) -> None:
    """The service's desired replica count (`cove scale`, the autoscaler); the engine's
    reconcile brings the replicas to it. Refused below zero, nothing changed."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CoveError(f"scale {service_name}={n}", "replicas must be 0 or more")
    old: list[int] = []

    def change(d: dict[str, Any]) -> None:
        s = service(d, service_name, project)
        if s["spec"].get("container_name") and n > 1:
            raise CoveError(f"scale {service_name}={n}",
                            f"service has a fixed container_name "
                            f"({s['spec']['container_name']}): one replica at most")
        old.append(int(s["replicas"]))
        s["replicas"] = n
    update(root, project, change)
    if old and old[0] != n:
        emit(root, project, service_name, "scale", reason, replicas=n, previous=old[0])


def rollout(root: str, project: str, svc: str, image: str | None) -> dict[str, Any]:
    """`cove rollout SERVICE [--image I]`, read-modify-write under the project's lock
    (which a reconcile pass changes the state under too): a new version (the image, or
    the same spec as a new generation: every replica replaced), the current one kept
    as `previous` for `rollback`; a paused rollout is resumed instead when no other
    image is asked (and one to another image keeps the last good version as
    `previous`, not the one that failed). The service's new state."""
    from cove.engine.services.composekeys import spec_hash

    def change(d: dict[str, Any]) -> None:
        s = service(d, svc, project)
        ro = s.get("rollout") or {}
        paused = ro.get("state") == "paused"
        if paused and image in (None, s["spec"]["image"]):
            s["rollout"] = {"state": "updating", "at": 0,
                            "reason": f"cove rollout (resumed; it paused: {ro.get('reason')})"}
            return
        spec = {**s["spec"], "image": image or s["spec"]["image"]}
        gen = int(s.get("generation", 0)) + (0 if image else 1)
        if not (paused and s.get("previous")):
            s["previous"] = {"spec": s["spec"], "hash": s["hash"]}
        s["spec"], s["generation"] = spec, gen
        s["hash"] = spec_hash(spec, gen)
        s["rollout"] = {"state": "updating", "reason": f"cove rollout {spec['image']}",
                        "at": 0}
    out: dict[str, Any] = update(root, project, change)["services"][svc]
    return out


def rollback(root: str, project: str, svc: str) -> dict[str, Any]:
    """`cove rollback SERVICE`: the previous version back (and the current one kept as
    `previous`), under the project's lock. The service's new state."""
    def change(d: dict[str, Any]) -> None:
        s = service(d, svc, project)
        prev = s.get("previous")
        if not prev:
            raise CoveError(f"rollback {svc}", "no previous version to go back to")
        s["previous"] = {"spec": s["spec"], "hash": s["hash"]}
        s["spec"], s["hash"] = prev["spec"], prev["hash"]
        s["rollout"] = {"state": "rolling_back", "reason": "cove rollback", "at": 0}
    out: dict[str, Any] = update(root, project, change)["services"][svc]
    return out


def remove(root: str, project: str) -> None:
    """Forget the project (after `down` took its replicas)."""
    d = pdir(root, project)
    for f in (DESIRED, "lock", "reconcile.lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, f))
    with contextlib.suppress(OSError):
        os.rmdir(d)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(d))
