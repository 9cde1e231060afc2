"""`client.containers`: run, create, get, list (docker's `ps` filters), prune."""

from __future__ import annotations

import builtins
import contextlib
from typing import Any

from cove.engine import containers, state
from cove.engine.pyapi.common import ContainerError, api_errors, filter_values
from cove.engine.pyapi.container import Container
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cove.engine.client import Client


_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _matches(rec: Mapping[str, Any], filters: dict[str, Any]) -> bool:
    """docker's `ps --filter`s: values of one key OR'ed, keys AND'ed."""
    import re
    for key, vals in filters.items():
        got = filter_values(key, vals)
        if key == "name":
            ok = any(re.search(p, rec["Name"]) or re.search(p, "/" + rec["Name"])
                     for p in got)
        elif key == "status":
            bad = [s for s in got if s not in _STATUSES]
            if bad:
                raise TypeError(f"list(): filters['status']: {bad[0]!r}: expected one of "
                                f"{', '.join(_STATUSES)}")
            ok = rec["State"]["Status"] in got
        elif key == "id":
            ok = any(rec["Id"].startswith(p) for p in got)
        elif key == "label":
            labels = rec["Config"].get("Labels") or {}
            ok = all(k in labels and (not eq or labels[k] == v)
                     for k, eq, v in (p.partition("=") for p in got))
        elif key == "exited":
            ok = rec["State"]["Status"] == "exited" and str(rec["State"]["ExitCode"]) in got
        elif key == "ancestor":
            ok = any(p in (rec["Image"], rec.get("ImageDigest"))
                     or str(rec.get("ImageDigest", "")).removeprefix("sha256:").startswith(
                         p.removeprefix("sha256:")) for p in got)
        else:
            raise TypeError(f"list(): filters: {key!r}: cove filters by name, status, id, "
                            "label, exited and ancestor")
        if not ok:
            return False
    return True


class ContainerCollection:
    """`client.containers`: run, create, get, list, prune."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _make(self, image: str, command: object, kwargs: dict[str, Any], call: str,
              run: bool, default_network: str) -> tuple[Container, Any]:
        """Create the container a run/create call asks for (started for a run) and its
        plan; a failure leaves nothing behind."""
        from cove.engine import runargs, volumes
        plan = runargs.translate(image, command, kwargs, call=call,
                                 default_network=default_network, run=run)
        root = self.client.root
        with api_errors():
            rec = containers.create(root, plan.options)
            name = rec["Name"]
            try:
                if plan.labels:
                    rec = state.update_record(state.Paths(root).cdir(name), lambda r: r[
                        "Config"].__setitem__("Labels", plan.labels))
                if plan.options.interactive:  # stdin_open: docker's OpenStdin, as run -i
                    rec = state.update_record(state.Paths(root).cdir(name), lambda r: r[
                        "Config"].update({"OpenStdin": True}))
                if run:
                    try:
                        rec = containers.start(root, name)
                    except CoveError as e:
                        # auto-removed (it ran, exited and went) before start looked at
                        # it again: started all the same; the object will say NotFound
                        if not (plan.options.rm and e.why == "no such container"):
                            raise
            except BaseException:
                with contextlib.suppress(Exception):
                    containers.remove(root, name, force=True)
                for v in rec.get("CreatedVolumes") or []:   # made for it: as `cove run`
                    with contextlib.suppress(CoveError, OSError):
                        volumes.remove(root, v)
                raise
        return Container(rec, self.client, root), plan

    def run(self, image: str, command: str | builtins.list[str] | None = None,
            **kwargs: Any) -> Any:
        """docker-py's run: with `detach`, the Container; else wait for it and return
        its stdout (bytes; `stderr=True` adds its stderr, `stream=True` gives an
        iterator of lines), raising ContainerError on a non-zero exit; `remove=True`
        removes it (and its anonymous volumes) afterwards."""
        c, plan = self._make(image, command, kwargs, "containers.run", True, "bridge")
        if plan.detach:
            return c
        return _finish(c, plan, command, image)

    def create(self, image: str, command: str | builtins.list[str] | None = None,
               **kwargs: Any) -> Container:
        """A new container, not started (`start()` it): run's keywords, less stdout,
        stderr, stream and remove."""
        c, _ = self._make(image, command, kwargs, "containers.create", False, "bridge")
        return c

    def get(self, container_id: str) -> Container:
        """By name, id, or a unique prefix of its id (NotFound if none)."""
        root = self.client.root
        with api_errors():
            rec = containers.inspect_record(root, container_id)
        return Container(rec, self.client, root)

    def list(self, all: bool = False, before: str | None = None,
             filters: dict[str, Any] | None = None, limit: int = -1,
             since: str | None = None, sparse: bool = False,
             ignore_removed: bool = False) -> builtins.list[Container]:
        """Running containers (all of them with `all`, or a status/exited filter),
        newest first; filters by name (a regular expression), status, id, label,
        exited, ancestor."""
        if before is not None or since is not None:
            raise TypeError("list(): before/since: not supported by cove")
        filters = dict(filters or {})
        root = self.client.root
        recs = containers.ps_records(root, all=all or "status" in filters or "exited" in filters)
        recs = [r for r in recs if _matches(r, filters)]
        recs.sort(key=lambda r: str(r["Created"]), reverse=True)
        if limit is not None and limit >= 0:
            recs = recs[:limit]
        return [Container(r, self.client, root) for r in recs]

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove the stopped containers (that match `filters`)."""
        gone = []
        for c in self.list(all=True, filters=filters):
            if c._attrs["State"]["Status"] in ("created", "exited", "dead"):
                with contextlib.suppress(CoveError):
                    c.remove()
                    gone.append(c.id)
        return {"ContainersDeleted": gone, "SpaceReclaimed": 0}


def _finish(c: Container, plan: Any, command: object, image: str) -> Any:
    """The rest of a run that is not detached: wait, read, remove, raise or return."""
    try:
        code = c.wait()["StatusCode"]
        out: Any = c.logs(stdout=plan.stdout, stderr=plan.stderr, stream=plan.stream,
                          follow=False)
        err = c.logs(stdout=False, stderr=True) if code else None
        if plan.stream:
            out = iter(builtins.list(out))  # read before it is removed
    finally:
        if plan.remove:
            with contextlib.suppress(CoveError):
                c.remove(v=True, force=True)
    if code:
        raise ContainerError(c, code, command, image, err if isinstance(err, bytes) else None)
    return out
