"""What a reconcile pass does to one replica (reconcile.py decides when): make it (the
project's networks and volumes first, its further networks joined before it starts),
make several at once, start an exited one again in place, announce its addresses, retire
it. Errors are said (and the pass goes on), not raised."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from cove.engine import state
from cove.engine.services.replica import PROJECT, alive, resource_name, run_options
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record

PARALLEL = True  # replicas of one batch are made at once (create_all)


class Actions:
    """The replica actions of a pass over `project` (reconcile.Pass has the rest)."""

    root: str
    project: str
    d: dict[str, Any]
    resources_ok: bool

    def say(self, msg: str) -> None:
        raise NotImplementedError

    def event(self, svc: str, action: str, reason: str, **kw: object) -> None:
        raise NotImplementedError

    # -- resources ------------------------------------------------------------------------

    def ensure_resources(self) -> None:
        """The project's networks and named volumes (before the first replica is made:
        a pass that makes nothing imports none of this)."""
        if self.resources_ok:
            return
        from cove.engine import network, volumes
        paths = state.Paths(self.root)
        for n in self.d.get("networks", []):
            net = resource_name(self.project, n)
            try:
                network.check_exists(paths, net)
            except CoveError:
                with contextlib.suppress(CoveError):  # made by a racing pass
                    network.create(self.root, net)
        for v in self.d.get("volumes", []):
            volumes.ensure(self.root, resource_name(self.project, v),
                           {PROJECT: self.project, "com.docker.compose.volume": v})
        self.resources_ok = True

    # -- one replica ----------------------------------------------------------------------

    def create(self, svc: str, s: dict[str, Any], n: int) -> bool:
        from cove.engine import containers
        o = run_options(self.project, self.d.get("workdir", ""), svc, s, n)
        try:
            self.ensure_resources()
            with contextlib.suppress(CoveError):
                containers.remove(self.root, o.name, force=True)  # a leftover of a kill
            containers.create(self.root, o)
            self.join_networks(s["spec"], o.name)
            rec = containers.start(self.root, o.name)
            self.announce(rec)
            return True
        except CoveError as e:
            self.say(f"{svc}: replica {n}: {e}")
            with contextlib.suppress(Exception):
                containers.remove(self.root, o.name, force=True)
            return False

    def join_networks(self, spec: dict[str, Any], name: str) -> None:
        """The service's further networks (`networks: [front, back]`): joined at the
        start, as `cove network connect` of a created container does; the first one
        (RunOptions.network) has the default route and the address the lb uses."""
        from cove.engine import netcontainer
        for n in spec["networks"][1:]:
            netcontainer.connect(self.root, resource_name(self.project, n), name)

    def restart(self, svc: str, s: dict[str, Any], r: dict[str, Any], reason: str) -> None:
        """Start an exited replica of the current version again (its rootfs, record and
        number kept: no create); one that won't start is replaced by a new one."""
        from cove.engine import containers
        try:
            rec = containers.start(self.root, r["name"])
        except CoveError as e:
            self.say(f"{svc}: restart {r['name']}: {e}")
            self.retire(r, 0)
            self.event(svc, "replace", f"{reason}; it would not start again: {e}",
                       container=r["name"])
            self.create(svc, s, r["number"])
            return
        self.announce(rec)
        self.event(svc, "replace", f"{reason}; started again", container=r["name"])

    def create_all(self, svc: str, s: dict[str, Any], numbers: list[int]) -> None:
        """Make the replicas `numbers`, at the same time when there are several (each
        in a forked child: a create and start is mostly waiting on the runtime, the
        monitor and the network; they share nothing but flocked records)."""
        if len(numbers) <= 1 or not PARALLEL:
            for n in numbers:
                self.create(svc, s, n)
            return
        self.ensure_resources()
        from cove.engine import containers, netcontainer, rtnl  # noqa: F401 - once, not per child
        sys.stderr.flush()
        pids = []
        for n in numbers:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    code = 0 if self.create(svc, s, n) else 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)

    def announce(self, rec: Record) -> None:
        """A gratuitous ARP from the new replica on each of its networks (announce.py:
        its address may be a dead one's, whose MAC its neighbours still hold)."""
        from cove.engine import netrecords
        from cove.engine.services import announce
        paths = state.Paths(self.root)
        name = rec["Name"].lstrip("/")
        nets = (rec.get("NetworkSettings") or {}).get("Networks") or {}
        for net, ep in nets.items():
            member = ((netrecords.load(paths, net) or {}).get("Containers") or {}).get(
                name) or {}
            announce.announce(os.path.join(paths.cdir(name), "netns"),
                              ep.get("MacAddress") or "", ep.get("IPAddress") or "",
                              member.get("Ifname", "eth0"))

    def retire(self, r: dict[str, Any], grace: float) -> None:
        from cove.engine import containers
        try:
            if alive(r):
                containers.stop(self.root, r["name"], grace)
            containers.remove(self.root, r["name"], force=True)
        except CoveError as e:
            self.say(f"retire {r['name']}: {e}")
