"""docker-py's client model, in-process over the engine: code written for docker-py
runs with `client = cove.from_env()` in place of `docker.from_env()`.

    client = cove.from_env()                 # or cove.Client(root="/tmp/r")
    client.containers.run("busybox", "echo hi", network="none")     # b"hi\\n"
    c = client.containers.run("busybox", "sleep 60", detach=True, network="none")
    c.exec_run("uname -r")                   # ExecResult(exit_code=0, output=b"...")
    c.stop(timeout=1); c.wait()["StatusCode"]; c.remove()
    client.volumes.create("data").name; client.images.get("busybox").tags

There is no daemon: every call runs the engine's own functions (cove/engine/
containers.py, volumes.py, network.py, images.py) in this process, on the state root
the client was given, as the `cove` command does with `--root`. What docker-py takes
is translated (cove/engine/runargs.py) or refused with a TypeError; it never means
something else without a word.

Differences that remain, on purpose:
- A Container reads its record afresh on every `attrs`/`status` (a file read):
  `reload()` is there for docker-py code, and is never needed.
- The default network is `bridge`, as docker's; `network="none"` for none.
- `images`, `volumes` and `networks` list what this root has: there are no built-in
  `bridge`/`host`/`none` network objects.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple, overload

from cove.engine import containers as C
from cove.engine import state as S
from cove.errors import CoveError

_root: str | None = None

APIError = CoveError


class NotFound(CoveError):
    """No such container, image, volume or network (docker-py's NotFound)."""


class ImageNotFound(NotFound):
    """No such image in the store (docker-py's ImageNotFound)."""


class ContainerError(CoveError):
    """`containers.run` (not detached) saw the container exit with a non-zero code;
    `stderr` is its standard error (bytes), as docker-py's ContainerError."""

    def __init__(self, container: Container, exit_status: int, command: object,
                 image: str, stderr: bytes | None) -> None:
        self.container = container
        self.exit_status = exit_status
        self.command = command
        self.image = image
        self.stderr = stderr
        err = f": {stderr.decode(errors='replace').strip()}" if stderr else ""
        super().__init__(f"Command '{command}' in image '{image}' returned non-zero exit "
                         f"status {exit_status}{err}")


class ExecResult(NamedTuple):
    """What `Container.exec_run` returns, as docker-py: the exit code (None when
    detached or streamed) and the output (bytes; a (stdout, stderr) pair with `demux`;
    an iterator when streamed)."""
    exit_code: int | None
    output: Any


_MISSING = {"no such container": NotFound, "no such volume": NotFound,
            "no such network": NotFound, "not found in the local store": ImageNotFound}


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """The engine's "no such ..." errors as NotFound (docker-py code catches that)."""
    try:
        yield
    except NotFound:
        raise
    except CoveError as e:
        kind = _MISSING.get(e.why)
        if kind is None:
            raise
        raise kind(e.what, e.why, e.code) from None


def set_root(root: str | None) -> None:
    """The state root that clients made without one (and `cove.run`, `cove.containers`,
    ...) use from now on."""
    global _root
    _root = root


def resolve_root(root: str | None) -> str:
    """`root`, else the one `set_root` gave, else the engine's default (as `cove`)."""
    from cove.image.store import Store
    return Store(root or _root).root


# -- containers -------------------------------------------------------------------------

def _entries_bytes(entries: Iterator[dict[str, Any]] | builtins.list[dict[str, Any]],
                   stdout: bool, stderr: bool, timestamps: bool,
                   until: float | None) -> Iterator[bytes]:
    want = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    for e in entries:
        if e["stream"] not in want:
            continue
        if until is not None and S.parse_rfc3339(e["time"]) >= until:
            continue
        line = str(e["log"]).encode()
        yield (e["time"].encode() + b" " + line) if timestamps else line


def _when(key: str, v: object) -> float | None:
    """A point in time as docker-py takes it: a datetime, or unix seconds."""
    import datetime
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        return v.timestamp()
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"logs(): {key}: expected a datetime or unix seconds, got {v!r}")


class Container:
    """A container of one state root, by name. `attrs` is its record (docker-inspect
    shaped) read afresh on each use, so `status`, `exit_code` and `health` are always
    current; after this object removed it they answer from its last record."""

    def __init__(self, attrs: dict[str, Any], client: Client, root: str) -> None:
        self.client = client
        self.root = root
        self._attrs = attrs
        self.name: str = attrs["Name"]
        self._gone = False
        self._kept_logs: builtins.list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"<Container: {self.short_id} {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Container", self.id))

    @property
    def id(self) -> str:
        return str(self._attrs["Id"])

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def attrs(self) -> dict[str, Any]:
        if not self._gone:
            self.reload()
        return self._attrs

    def reload(self) -> None:
        """Read the record again (NotFound once it is gone, as docker-py)."""
        with _errors():
            if self._gone:
                raise NotFound(f"container {self.name}", "no such container")
            rec = C.inspect(self.root, self.name)
            if rec["Id"] != self.id:   # removed, and the name given to another
                raise NotFound(f"container {self.name}", "no such container")
            self._attrs = rec

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])

    @property
    def exit_code(self) -> int:
        return int(self.attrs["State"]["ExitCode"])

    @property
    def health(self) -> str:
        """Its health check's status; "unknown" without one (as docker-py)."""
        h = self.attrs["State"].get("Health")
        return str(h["Status"]) if h else "unknown"

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.attrs["Config"].get("Labels") or {})

    @property
    def ports(self) -> dict[str, Any]:
        a = self.attrs
        return dict(a["NetworkSettings"].get("Ports") or a["HostConfig"]["PortBindings"])

    @property
    def image(self) -> Image | None:
        digest = self.attrs.get("ImageDigest")
        try:
            return self.client.images.get(digest) if digest else None
        except NotFound:
            return None

    # lifecycle

    def start(self) -> None:
        with _errors():
            C.start(self.root, self.name)

    def stop(self, timeout: float | None = None) -> None:
        """The stop signal, SIGKILL after `timeout` seconds (10)."""
        with _errors():
            C.stop(self.root, self.name, 10.0 if timeout is None else timeout)

    def restart(self, timeout: float | None = None) -> None:
        with _errors():
            C.restart(self.root, self.name, 10.0 if timeout is None else timeout)

    def kill(self, signal: str | int | None = None) -> None:
        """A signal (SIGKILL by default), by name ("TERM", "SIGTERM") or number."""
        with _errors():
            C.kill(self.root, self.name, "KILL" if signal is None else signal)

    def remove(self, v: bool = False, link: bool = False, force: bool = False) -> None:
        """Remove it (`force`: even running). Its anonymous volumes (an image's VOLUME)
        go only with `v=True`, as docker's; without, they stay, unused."""
        if link:
            raise TypeError("remove(): link: cove has no links")
        self.reload()              # NotFound if gone (or the name is another's now)
        with _errors():
            if self._attrs["State"]["Status"] in C.ACTIVE:
                if not force:
                    raise CoveError(f"container {self.name}", "is running: stop it first "
                                                              "or use force=True")
                # killed here rather than by the engine's remove: the object keeps the
                # record of its exit
                with contextlib.suppress(CoveError):
                    C.kill(self.root, self.name, "KILL")
                with contextlib.suppress(CoveError):
                    C.wait(self.root, self.name, 10)
                self.reload()
            if not v:
                cdir = S.Paths(self.root).cdir(self.name)
                S.update(cdir, lambda r: r.__setitem__("AnonymousVolumes", []))
            C.remove(self.root, self.name, force=force)
        self._gone = True

    def wait(self, timeout: float | None = None,
             condition: str | None = None) -> dict[str, Any]:
        """Until it is not running (or, with condition="removed", gone): {"StatusCode":
        n} (and "Error": {"Message": ...} when the engine recorded one). A container
        removed by auto-removal before its exit was seen raises NotFound."""
        cond = condition or "not-running"
        if cond not in ("not-running", "removed"):
            raise TypeError(f"wait(): condition: {condition!r}: expected 'not-running' or "
                            "'removed'")
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            try:
                rec = C.inspect(self.root, self.name) if not self._gone else None
            except CoveError as e:
                if e.why != "no such container":
                    raise
                rec = None
            if rec is not None and rec["Id"] != self.id:
                rec = None
            if rec is None:
                last = last or (self._attrs if self._gone else None)
                if last is None or last["State"]["Status"] in C.ACTIVE:
                    # auto-removed between two looks: its exit code went with it
                    raise NotFound(f"container {self.name}",
                                   "removed before its exit code was read")
                break
            last = rec
            if cond == "not-running" and rec["State"]["Status"] not in C.ACTIVE:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise CoveError(f"wait {self.name}", "timed out")
            C.nap(rec, None if deadline is None else deadline - time.monotonic())
        out: dict[str, Any] = {"StatusCode": int(last["State"]["ExitCode"])}
        if last["State"].get("Error"):
            out["Error"] = {"Message": str(last["State"]["Error"])}
        return out

    # output

    @overload
    def logs(self, stdout: bool = ..., stderr: bool = ..., stream: Literal[False] = ...,
             timestamps: bool = ..., tail: str | int = ..., since: object = ...,
             follow: bool | None = ..., until: object = ...) -> bytes: ...

    @overload
    def logs(self, stdout: bool = ..., stderr: bool = ..., *, stream: Literal[True],
             timestamps: bool = ..., tail: str | int = ..., since: object = ...,
             follow: bool | None = ..., until: object = ...) -> Iterator[bytes]: ...

    def logs(self, stdout: bool = True, stderr: bool = True, stream: bool = False,
             timestamps: bool = False, tail: str | int = "all", since: object = None,
             follow: bool | None = None, until: object = None) -> bytes | Iterator[bytes]:
        """Its log as bytes (both streams, interleaved as written), or with `stream` an
        iterator of lines (following it while it runs, unless follow=False)."""
        if tail == "all":
            n = -1
        elif isinstance(tail, int) and not isinstance(tail, bool) and tail >= 0:
            n = tail
        else:
            raise TypeError(f"logs(): tail: expected 'all' or an int >= 0, got {tail!r}")
        after = _when("since", since)
        before = _when("until", until)
        follow = stream if follow is None else follow
        entries: Iterator[dict[str, Any]] | builtins.list[dict[str, Any]]
        if self._kept_logs is not None:
            kept = [e for e in self._kept_logs
                    if after is None or S.parse_rfc3339(e["time"]) >= after]
            entries = kept[len(kept) - n:] if n > 0 else ([] if n == 0 else kept)
        else:
            with _errors():
                entries = C.logs(self.root, self.name, follow=follow, tail=n,
                                 since=None if after is None else str(after))
        lines = _entries_bytes(entries, stdout, stderr, timestamps, before)
        return lines if stream else b"".join(lines)

    def exec_run(self, cmd: str | builtins.list[str], stdout: bool = True,
                 stderr: bool = True, stdin: bool = False, tty: bool = False,
                 privileged: bool = False, user: str = "", detach: bool = False,
                 stream: bool = False, socket: bool = False,
                 environment: dict[str, str] | builtins.list[str] | None = None,
                 workdir: str | None = None, demux: bool = False) -> ExecResult:
        """Run `cmd` in it (a string is split as a shell splits words): ExecResult(code,
        output), the output of both streams in one (or (stdout, stderr) with `demux`,
        None for one that wrote nothing). No terminal, no stdin, not privileged."""
        import subprocess

        from cove.engine import runargs
        for k, on in (("stdin", stdin), ("tty", tty), ("privileged", privileged),
                      ("socket", socket)):
            if on:
                raise TypeError(f"exec_run(): {k}: not supported by cove's Python API "
                                f"(`cove exec -it` has a terminal)")
        argv = runargs.command("exec_run", "cmd", cmd)
        if not argv:
            raise TypeError("exec_run(): cmd: empty")
        paths = S.Paths(self.root)
        with _errors():
            rec = C.inspect(self.root, self.name)
        if rec["State"]["Status"] != "running":
            raise CoveError(f"container {self.name}", "is not running")
        args = [*C.runtime(paths), "exec"]
        for e in runargs.environment("exec_run", "environment", environment):
            args += ["-e", e]
        if workdir:
            args += ["--cwd", workdir]
        if user:
            args += ["-u", user]
        if detach:
            subprocess.run([*args, "-d", self.name, *argv], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            return ExecResult(None, b"")
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        out_to = pipe if stdout else null
        err_to = null if not stderr else pipe if demux or not stdout else subprocess.STDOUT
        p = subprocess.Popen([*args, self.name, *argv], stdin=null, stdout=out_to,
                             stderr=err_to)
        if stream:
            return ExecResult(None, _exec_stream(p, demux))
        out, err = p.communicate()
        if demux:
            return ExecResult(p.returncode, (out or None, err or None))
        return ExecResult(p.returncode, (out or b"") + (err or b""))

    def top(self, ps_args: str | None = None) -> dict[str, Any]:
        """Its processes, as docker's {"Titles": [...], "Processes": [[...], ...]}."""
        with _errors():
            text = C.top(self.root, self.name, ps_args.split() if ps_args else None)
        lines = text.splitlines()
        titles = lines[0].split() if lines else []
        procs = [ln.split(None, len(titles) - 1) for ln in lines[1:] if ln.strip()]
        return {"Titles": titles, "Processes": procs}

    @overload
    def stats(self, decode: bool | None = ..., *,
              stream: Literal[False]) -> dict[str, Any]: ...

    @overload
    def stats(self, decode: bool | None = ..., stream: Literal[True] = ...) -> Iterator[Any]:
        ...

    def stats(self, decode: bool | None = None,
              stream: bool = True) -> dict[str, Any] | Iterator[Any]:
        """docker's stats document (memory_stats, cpu_stats, pids_stats, ...; the
        runtime's own sample under "cove"): one dict with stream=False, else (as
        docker-py) an iterator of one a second while it runs, JSON bytes unless
        `decode`."""
        if not stream:
            return self._stats(None)
        return self._stats_stream(bool(decode))

    def _stats_stream(self, decode: bool) -> Iterator[Any]:
        import json
        pre: dict[str, Any] | None = None
        while self.status == "running":
            try:
                cur = self._stats(pre)
            except CoveError:
                return
            yield cur if decode else json.dumps(cur).encode()
            pre = cur["cpu_stats"]
            time.sleep(1.0)

    def _stats(self, pre: dict[str, Any] | None) -> dict[str, Any]:
        with _errors():
            s = C.stats(self.root, self.name)
        raw = s.get("Raw") or {}
        cpu = raw.get("cpu", {}).get("usage", {})
        cpu_stats = {"cpu_usage": {"total_usage": s["CPUNanos"],
                                   "usage_in_kernelmode": cpu.get("kernel", 0),
                                   "usage_in_usermode": cpu.get("user", 0)},
                     "system_cpu_usage": _system_cpu_ns(),
                     "online_cpus": os.cpu_count() or 1}
        return {"read": S.now_rfc3339(), "name": "/" + self.name, "id": self.id,
                "pids_stats": {"current": s["Pids"]},
                "memory_stats": {"usage": s["MemUsage"], "limit": s["MemLimit"],
                                 "stats": raw.get("memory", {}).get("raw", {})},
                "cpu_stats": cpu_stats,
                "precpu_stats": pre or {"cpu_usage": {"total_usage": 0},
                                        "system_cpu_usage": 0},
                "cove": raw}


def _system_cpu_ns() -> int:
    """The host's CPU time so far, in ns (docker's system_cpu_usage, from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
        return sum(int(x) for x in fields) * (10**9 // os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 0


def _exec_stream(p: Any, demux: bool) -> Iterator[Any]:
    """Chunks of an exec's output as they come (pairs with `demux`)."""
    import selectors
    sel = selectors.DefaultSelector()
    for f, which in ((p.stdout, 0), (p.stderr, 1)):
        if f is not None:
            sel.register(f, selectors.EVENT_READ, which)
    try:
        while sel.get_map():
            for key, _ in sel.select():
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if demux:
                    yield (chunk, None) if key.data == 0 else (None, chunk)
                else:
                    yield chunk
    finally:
        sel.close()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        with contextlib.suppress(Exception):
            p.wait(timeout=5)


_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _filter_values(key: str, v: object) -> builtins.list[str]:
    if isinstance(v, str | int | bool):
        v = [v]
    if not isinstance(v, list | tuple):
        raise TypeError(f"list(): filters[{key!r}]: expected a str or a list, got {v!r}")
    return [str(x).lower() if isinstance(x, bool) else str(x) for x in v]


def _matches(rec: dict[str, Any], filters: dict[str, Any]) -> bool:
    """docker's `ps --filter`s: values of one key OR'ed, keys AND'ed."""
    import re
    for key, vals in filters.items():
        got = _filter_values(key, vals)
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
        from cove.engine import runargs
        from cove.engine import volumes as V
        plan = runargs.translate(image, command, kwargs, call=call,
                                 default_network=default_network, run=run)
        root = self.client.root
        with _errors():
            rec = C.create(root, plan.options)
            name = rec["Name"]
            try:
                if plan.labels:
                    rec = S.update(S.Paths(root).cdir(name), lambda r: r["Config"].__setitem__(
                        "Labels", plan.labels))
                if run:
                    try:
                        rec = C.start(root, name)
                    except CoveError as e:
                        # auto-removed (it ran, exited and went) before start looked at
                        # it again: started all the same; the object will say NotFound
                        if not (plan.options.rm and e.why == "no such container"):
                            raise
            except BaseException:
                with contextlib.suppress(Exception):
                    C.remove(root, name, force=True)
                for v in rec.get("CreatedVolumes") or []:   # made for it: as `cove run`
                    with contextlib.suppress(CoveError, OSError):
                        V.remove(root, v)
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
        with _errors():
            rec = C.inspect(root, container_id)
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
        recs = C.ps(root, all=all or "status" in filters or "exited" in filters)
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


# -- images -----------------------------------------------------------------------------

class Image:
    """An image of the store: `attrs` (Id, RepoTags, RepoDigests, Created, Size, Os,
    Architecture, Config), `id` (the digest `cove images` shows), `tags`."""

    def __init__(self, attrs: dict[str, Any], client: Client) -> None:
        self.attrs = attrs
        self.client = client

    def __repr__(self) -> str:
        return f"<Image: {', '.join(repr(t) for t in self.tags)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Image", self.id))

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def short_id(self) -> str:
        return self.id[:19]  # sha256: and 12 hex digits, as docker-py

    @property
    def tags(self) -> builtins.list[str]:
        return builtins.list(self.attrs["RepoTags"])

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.attrs.get("Config") or {}).get("Labels") or {})

    def reload(self) -> None:
        self.attrs = self.client.images.get(self.id).attrs

    def tag(self, repository: str, tag: str | None = None) -> bool:
        """Give it another name (`repository:tag`)."""
        from cove.image.store import Store
        with _errors():
            Store(self.client.root).tag(self.id, f"{repository}:{tag}" if tag else repository)
        self.reload()
        return True


def _image_attrs(root: str, digest: str) -> dict[str, Any]:
    import json

    from cove.image.store import Store
    st = Store(root)
    img = st.image(digest)
    raw = json.loads(img.config_raw)
    return {"Id": digest, "RepoTags": [n for n in img.names if "@" not in n],
            "RepoDigests": [n for n in img.names if "@" in n],
            "Created": img.config.created, "Size": img.size,
            "Architecture": img.config.architecture, "Os": img.config.os,
            "Config": raw.get("config") or {}, "ManifestDigest": img.digest}


class ImageCollection:
    """`client.images`: get, list, pull."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Image:
        """By name, digest, or a unique prefix of its id (ImageNotFound if none)."""
        from cove.image.store import Store
        root = self.client.root
        with _errors():
            digest = Store(root).resolve(name)
            return Image(_image_attrs(root, digest), self.client)

    def list(self, name: str | None = None, all: bool = False,
             filters: dict[str, Any] | None = None) -> builtins.list[Image]:
        """The store's images, newest first; `name` a repository (or repository:tag);
        filters: dangling, reference (a glob), label."""
        import fnmatch

        from cove.image.store import Store
        root = self.client.root
        out = []
        for rec in sorted(Store(root).records(), key=lambda r: -r.created):
            try:
                attrs = _image_attrs(root, rec.digest)
            except CoveError:
                continue
            tags = attrs["RepoTags"]
            if name and not any(t == name or t.rpartition(":")[0] == name or
                                t.rpartition(":")[0].rpartition("/")[2] == name
                                for t in tags):
                continue
            ok = True
            for key, vals in (filters or {}).items():
                got = _filter_values(key, vals)
                if key == "dangling":
                    ok = ok and (not tags) == (got[0] in ("true", "1"))
                elif key == "reference":
                    ok = ok and any(fnmatch.fnmatch(t, p) or fnmatch.fnmatch(
                        t.rpartition(":")[0], p) for t in tags for p in got)
                elif key == "label":
                    labels = attrs["Config"].get("Labels") or {}
                    ok = ok and builtins.all(k in labels and (not eq or labels[k] == v)
                                    for k, eq, v in (p.partition("=") for p in got))
                else:
                    raise TypeError(f"images.list(): filters: {key!r}: cove filters by "
                                    "dangling, reference and label")
            if ok:
                out.append(Image(attrs, self.client))
        return out

    def pull(self, repository: str, tag: str | None = None, all_tags: bool = False,
             **kwargs: Any) -> Image:
        """Pull `repository[:tag]` (latest by default) from its registry; `platform`
        ("os/arch[/variant]"), `auth_config` ({"username", "password"}) as docker-py."""
        from cove.image import progress
        from cove.image.store import Store
        from cove.image.transfer import RegistryOptions, pull
        from cove.oci.image import Platform
        if all_tags:
            raise TypeError("images.pull(): all_tags: not supported by cove")
        bad = sorted(set(kwargs) - {"platform", "auth_config", "stream", "decode"})
        if bad:
            raise TypeError(f"images.pull() got an unexpected keyword argument {bad[0]!r}")
        plat = kwargs.get("platform")
        if plat is not None and not isinstance(plat, str):
            raise TypeError(f"images.pull(): platform: expected 'os/arch', got {plat!r}")
        opts = RegistryOptions()
        auth = kwargs.get("auth_config")
        if auth:
            if not isinstance(auth, dict) or not {"username", "password"} <= set(auth):
                raise TypeError("images.pull(): auth_config: expected {'username': ..., "
                                "'password': ...}")
            opts.creds = (str(auth["username"]), str(auth["password"]))
        ref = repository
        if tag:
            ref += ("@" if tag.startswith("sha256:") else ":") + tag
        root = self.client.root
        with _errors():
            digest = pull(Store(root), ref, opts=opts, progress=progress.choose(True),
                          platform=Platform.from_string(plat) if plat else None)
        return self.get(digest)

    def build(self, path: str | None = None, tag: str | None = None, *,
              dockerfile: str | None = None, buildargs: dict[str, str] | None = None,
              target: str | None = None, nocache: bool = False, pull: bool = False,
              labels: dict[str, str] | None = None, network_mode: str | None = None,
              platform: str | None = None, fileobj: Any = None, quiet: bool = False,
              **kwargs: Any) -> tuple[Image, Iterator[dict[str, Any]]]:
        """Build an image from a directory (`path`) or a tar context (`fileobj`), as
        docker-py: returns (image, the build's log as {"stream": line} dicts). Options
        docker-py has and cove has no use for (rm, forcerm, timeout...) are accepted."""
        from cove.image.build.builder import Options
        from cove.image.build.builder import build as do_build
        from cove.image.store import Store
        bad = sorted(set(kwargs) - {"rm", "forcerm", "timeout", "encoding", "decode",
                                    "custom_context", "use_config_proxy", "isolation"})
        if bad:
            raise TypeError(f"images.build() got an unexpected keyword argument {bad[0]!r}")
        if path is None and fileobj is None:
            raise TypeError("images.build(): give path or fileobj")
        log: builtins.list[dict[str, Any]] = []
        opts = Options(context=path if path is not None else "-", dockerfile=dockerfile,
                       tags=[tag] if tag else [], build_args=dict(buildargs or {}),
                       target=target, no_cache=nocache, pull=pull,
                       labels=dict(labels or {}),
                       network="host" if network_mode == "host" else "none",
                       platform=platform, stdin=fileobj)
        with _errors():
            res = do_build(Store(self.client.root), opts,
                           lambda line: log.append({"stream": line + "\n"}))
        log.append({"aux": {"ID": res.image_id}})
        return self.get(res.digest), iter(log)


# -- volumes and networks ---------------------------------------------------------------

class Volume:
    """A named volume: `name` (= `id`), `attrs` (Name, Driver, Mountpoint, CreatedAt,
    Labels, Scope), `remove()`."""

    def __init__(self, attrs: dict[str, Any], client: Client) -> None:
        self.attrs = attrs
        self.client = client

    def __repr__(self) -> str:
        return f"<Volume: {self.short_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Volume", self.id))

    @property
    def id(self) -> str:
        return str(self.attrs["Name"])

    name = id

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def reload(self) -> None:
        self.attrs = self.client.volumes.get(self.id).attrs

    def remove(self, force: bool = False) -> None:
        """Remove it (refused while a container uses it)."""
        from cove.engine import volumes as V
        with _errors():
            V.remove(self.client.root, self.id, force=force)


ANONYMOUS = "cove.anonymous"   # the label of volumes made without a name (the engine's)


class VolumeCollection:
    """`client.volumes`: create, get, list, prune."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str | None = None, **kwargs: Any) -> Volume:
        """A volume (`name`, else a random one); as docker, creating one that exists
        returns it. `driver` "local", `labels` a dict; no driver_opts."""
        from cove.engine import volumes as V
        bad = sorted(set(kwargs) - {"driver", "driver_opts", "labels"})
        if bad:
            raise TypeError(f"volumes.create() got an unexpected keyword argument {bad[0]!r}")
        if kwargs.get("driver") not in (None, "local"):
            raise TypeError(f"volumes.create(): driver: {kwargs['driver']!r}: cove has local")
        if kwargs.get("driver_opts"):
            raise TypeError("volumes.create(): driver_opts: not supported by cove")
        labels = kwargs.get("labels") or {}
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise TypeError("volumes.create(): labels: expected a dict of str to str")
        if name is None:
            name, labels = os.urandom(32).hex(), {**labels, ANONYMOUS: "true"}
        with _errors():
            return Volume(V.ensure(self.client.root, name, labels), self.client)

    def get(self, volume_id: str) -> Volume:
        from cove.engine import volumes as V
        with _errors():
            return Volume(V.inspect(self.client.root, volume_id), self.client)

    def list(self, filters: dict[str, Any] | None = None) -> builtins.list[Volume]:
        """This root's volumes; filters: name (a substring), label, dangling."""
        from cove.engine import volumes as V
        root = self.client.root
        out = []
        for info in V.ls(root):
            ok = True
            for key, vals in (filters or {}).items():
                got = _filter_values(key, vals)
                if key == "name":
                    ok = ok and any(p in info["Name"] for p in got)
                elif key == "label":
                    labels = info.get("Labels") or {}
                    ok = ok and all(k in labels and (not eq or labels[k] == v)
                                    for k, eq, v in (p.partition("=") for p in got))
                elif key == "dangling":
                    ok = ok and (not V.users(root, info["Name"])) == (got[0] in ("true", "1"))
                else:
                    raise TypeError(f"volumes.list(): filters: {key!r}: cove filters by "
                                    "name, label and dangling")
            if ok:
                out.append(Volume(info, self.client))
        return out

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove the unused anonymous volumes, as docker's (filters={"all": True}:
        every unused volume, named ones too)."""
        from cove.engine import volumes as V
        f = dict(filters or {})
        every = _filter_values("all", f.pop("all", False))[0] in ("true", "1")
        root = self.client.root
        gone = []
        for vol in self.list(filters={**f, "dangling": True}):
            if every or (vol.attrs.get("Labels") or {}).get(ANONYMOUS) == "true":
                with contextlib.suppress(CoveError):
                    V.remove(root, vol.id)
                    gone.append(vol.id)
        return {"VolumesDeleted": gone, "SpaceReclaimed": 0}


class Network:
    """A bridge network: `name`, `id`, `attrs` (Name, Id, Driver, Subnet, Gateway,
    Bridge, Containers), `containers`, `remove()`."""

    def __init__(self, attrs: dict[str, Any], client: Client) -> None:
        self.attrs = attrs
        self.client = client

    def __repr__(self) -> str:
        return f"<Network: {self.short_id} {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Network", self.id))

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return str(self.attrs["Name"])

    @property
    def containers(self) -> builtins.list[Container]:
        out = []
        for n in self.attrs.get("Containers") or {}:
            with contextlib.suppress(NotFound):
                out.append(self.client.containers.get(n))
        return out

    def reload(self) -> None:
        self.attrs = self.client.networks.get(self.name).attrs

    def remove(self) -> None:
        """Remove it (refused while a container is on it)."""
        from cove.engine import network as N
        with _errors():
            N.remove(self.client.root, self.name)


class NetworkCollection:
    """`client.networks`: create, get, list, prune."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, driver: str | None = None, **kwargs: Any) -> Network:
        """A bridge network; its subnet from `ipam` (docker-py's IPAMConfig, one pool
        with a Subnet) or cove's `subnet=`, else the next free 10.N.0.0/24."""
        from cove.engine import network as N
        known = {"options", "ipam", "check_duplicate", "internal", "labels", "enable_ipv6",
                 "attachable", "scope", "ingress", "subnet"}
        bad = sorted(set(kwargs) - known)
        if bad:
            raise TypeError(f"networks.create() got an unexpected keyword argument {bad[0]!r}")
        if driver not in (None, "bridge"):
            raise TypeError(f"networks.create(): driver: {driver!r}: cove has bridge")
        for k in ("options", "internal", "labels", "enable_ipv6", "attachable", "ingress"):
            if kwargs.get(k):
                raise TypeError(f"networks.create(): {k}: not supported by cove")
        if kwargs.get("scope") not in (None, "local"):
            raise TypeError(f"networks.create(): scope: {kwargs['scope']!r}: cove has local")
        subnet = kwargs.get("subnet")
        ipam = kwargs.get("ipam")
        if ipam:
            pools = (ipam.get("Config") or []) if isinstance(ipam, dict) else None
            if pools is None or len(pools) > 1 or not all(isinstance(p, dict) for p in pools) \
                    or ipam.get("Driver") not in (None, "default") or ipam.get("Options") \
                    or any(k not in ("Subnet", "Gateway") and v for p in pools
                           for k, v in p.items()):
                raise TypeError("networks.create(): ipam: cove takes the default driver "
                                "and one pool with a Subnet")
            if pools:
                if subnet:
                    raise TypeError("networks.create(): subnet and ipam together")
                subnet = pools[0].get("Subnet")
                gw = pools[0].get("Gateway")
                if gw:
                    import ipaddress
                    first = str(next(ipaddress.ip_network(subnet or "").hosts()))
                    if gw != first:
                        raise TypeError(f"networks.create(): ipam Gateway {gw}: cove's "
                                        f"gateway is the subnet's first address ({first})")
        with _errors():
            return Network(N.create(self.client.root, name, subnet), self.client)

    def get(self, network_id: str) -> Network:
        """By name, id or a unique prefix of its id."""
        from cove.engine import network as N
        root = self.client.root
        with _errors():
            try:
                return Network(N.inspect(root, network_id), self.client)
            except CoveError:
                hits = [n for n in N.ls(root) if network_id and n["Id"].startswith(network_id)]
                if len(hits) != 1:
                    raise
                return Network(hits[0], self.client)

    def list(self, names: builtins.list[str] | None = None,
             ids: builtins.list[str] | None = None,
             filters: dict[str, Any] | None = None, greedy: bool = False) -> builtins.list[
                 Network]:
        """This root's networks; by `names`, `ids`, filters name, id, driver."""
        from cove.engine import network as N
        out = []
        for n in N.ls(self.client.root):
            if names is not None and n["Name"] not in names:
                continue
            if ids is not None and n["Id"] not in ids:
                continue
            ok = True
            for key, vals in (filters or {}).items():
                got = _filter_values(key, vals)
                field = {"name": "Name", "id": "Id", "driver": "Driver"}.get(key)
                if field is None:
                    raise TypeError(f"networks.list(): filters: {key!r}: cove filters by "
                                    "name, id and driver")
                ok = ok and any(p in str(n[field]) for p in got)
            if ok:
                out.append(Network(n, self.client))
        return out

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove the networks no container is on."""
        from cove.engine import network as N
        gone = []
        for n in self.list(filters=filters):
            if not n.attrs.get("Containers"):
                with contextlib.suppress(CoveError):
                    N.remove(self.client.root, n.name)
                    gone.append(n.name)
        return {"NetworksDeleted": gone}


# -- the client -------------------------------------------------------------------------

class Client:
    """docker-py's DockerClient over one state root (`root`; else `cove.set_root`'s,
    else the engine's default, resolved on each call)."""

    def __init__(self, root: str | None = None) -> None:
        self._root = root
        self.containers = ContainerCollection(self)
        self.images = ImageCollection(self)
        self.volumes = VolumeCollection(self)
        self.networks = NetworkCollection(self)

    def __repr__(self) -> str:
        return f"<cove.Client root={self.root!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> str:
        return resolve_root(self._root)

    def close(self) -> None:
        """Nothing to close (no connection): for docker-py code."""

    def ping(self) -> bool:
        return True

    def version(self) -> dict[str, Any]:
        import platform

        import cove
        return {"Version": cove.__version__, "Os": "linux", "Arch": platform.machine(),
                "Components": [{"Name": "cove", "Version": cove.__version__}]}

    def info(self) -> dict[str, Any]:
        recs = C.ps(self.root, all=True)
        running = sum(r["State"]["Status"] == "running" for r in recs)
        return {"Containers": len(recs), "ContainersRunning": running,
                "ContainersStopped": len(recs) - running,
                "Images": len(self.images.list()), "DockerRootDir": self.root,
                "Driver": "overlay", "OperatingSystem": "linux"}


def from_env(environment: dict[str, str] | None = None, **kwargs: Any) -> Client:
    """A Client on the state root in $COVE_ROOT (of `environment`, else this process's),
    else the default. docker-py's transport settings (`version`, `timeout`, ...) mean
    nothing in-process and are accepted and ignored."""
    bad = sorted(set(kwargs) - {"version", "timeout", "max_pool_size", "use_ssh_client"})
    if bad:
        raise TypeError(f"from_env() got an unexpected keyword argument {bad[0]!r}")
    env = os.environ if environment is None else environment
    return Client(env.get("COVE_ROOT") or None)
