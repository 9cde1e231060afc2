"""Cove's Python API: a small, typed layer over the engine the `cove` command uses.

    import cove
    c = cove.run("busybox", ["echo", "hi"])          # waits; c.exit_code, c.logs()
    c = cove.run("busybox", ["sleep", "60"], detach=True, name="s", restart="always")
    cove.containers.list(all=True); cove.containers.get("s").stop()
    cove.volumes.create("data"); cove.networks.create("app")

Every call takes `root=` (the state root, as `cove --root`); `cove.set_root(DIR)` sets
the default for the process.
"""

from __future__ import annotations

import builtins
from dataclasses import fields
from typing import Any

from cove.engine import containers as C
from cove.engine import network as N
from cove.engine import volumes as V

_root: str | None = None


def set_root(root: str | None) -> None:
    """The state root later calls use when they get no `root=`."""
    global _root
    _root = root


def _r(root: str | None) -> str:
    from cove.image.store import Store
    return Store(root or _root).root


class Container:
    """A container by name; properties read its record afresh."""

    def __init__(self, name: str, root: str) -> None:
        self.name = name
        self.root = root

    def __repr__(self) -> str:
        return f"<Container {self.name} {self.status}>"

    @property
    def attrs(self) -> dict[str, Any]:
        return C.inspect(self.root, self.name)

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])

    @property
    def exit_code(self) -> int:
        return int(self.attrs["State"]["ExitCode"])

    @property
    def health(self) -> str | None:
        h = self.attrs["State"].get("Health")
        return str(h["Status"]) if h else None

    def logs(self, stdout: bool = True, stderr: bool = True, tail: int = -1) -> str:
        want = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        return "".join(e["log"] for e in C.logs(self.root, self.name, tail=tail)
                       if e["stream"] in want)

    def start(self) -> None:
        C.start(self.root, self.name)

    def stop(self, timeout: float = 10.0) -> None:
        C.stop(self.root, self.name, timeout)

    def restart(self, timeout: float = 10.0) -> None:
        C.restart(self.root, self.name, timeout)

    def kill(self, signal: str | int = "KILL") -> None:
        C.kill(self.root, self.name, signal)

    def wait(self, timeout: float | None = None) -> int:
        return C.wait(self.root, self.name, timeout)

    def remove(self, force: bool = False) -> None:
        C.remove(self.root, self.name, force=force)

    def exec(self, cmd: list[str], env: list[str] | None = None) -> int:
        return C.exec_(self.root, self.name, cmd, env=env)

    def stats(self) -> dict[str, Any]:
        return C.stats(self.root, self.name)

    def top(self) -> str:
        return C.top(self.root, self.name)


def run(image: str, command: list[str] | None = None, *, detach: bool = False,
        root: str | None = None, **options: Any) -> Container:
    """Run `command` in a new container (keyword options as `cove run`'s flags:
    name, env, volumes, publish, network, memory, restart, health_cmd, ...). Without
    `detach`, waits for it to exit: read `exit_code` and `logs()` (and `remove()` it,
    unless `rm=True`, which removes it... after you read nothing: prefer detach then)."""
    known = {f.name for f in fields(C.RunOptions)}
    bad = set(options) - known
    if bad:
        raise TypeError(f"run: unknown options {sorted(bad)}")
    options.setdefault("network", "none" if not options.get("publish") else "bridge")
    rm = bool(options.pop("rm", False))
    o = C.RunOptions(image=image, command=list(command or []), detach=True, **options)
    r = _r(root)
    rec, _ = C.run(r, o)
    c = Container(rec["Name"], r)
    if not detach:
        c.wait()
        if rm:
            c.remove(force=True)
    return c


class _Containers:
    def list(self, all: bool = False, root: str | None = None) -> list[Container]:
        r = _r(root)
        return [Container(rec["Name"], r) for rec in C.ps(r, all=all)]

    def get(self, name: str, root: str | None = None) -> Container:
        r = _r(root)
        return Container(C.inspect(r, name)["Name"], r)

    def run(self, image: str, command: builtins.list[str] | None = None, **kw: Any) -> Container:
        return run(image, command, **kw)


class _Volumes:
    def create(self, name: str, root: str | None = None) -> dict[str, Any]:
        return V.create(_r(root), name)

    def list(self, root: str | None = None) -> list[dict[str, Any]]:
        return V.ls(_r(root))

    def get(self, name: str, root: str | None = None) -> dict[str, Any]:
        return V.inspect(_r(root), name)

    def remove(self, name: str, root: str | None = None) -> None:
        V.remove(_r(root), name)

    def prune(self, root: str | None = None) -> builtins.list[str]:
        return V.prune(_r(root))


class _Networks:
    def create(self, name: str, subnet: str | None = None,
               root: str | None = None) -> dict[str, Any]:
        return N.create(_r(root), name, subnet)

    def list(self, root: str | None = None) -> list[dict[str, Any]]:
        return N.ls(_r(root))

    def get(self, name: str, root: str | None = None) -> dict[str, Any]:
        return N.inspect(_r(root), name)

    def remove(self, name: str, root: str | None = None) -> None:
        N.remove(_r(root), name)


containers = _Containers()
volumes = _Volumes()
networks = _Networks()
