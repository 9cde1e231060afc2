"""`Container`: one container of a state root, by name, as docker-py's (its record read
afresh on each use; lifecycle, logs, exec_run, top, stats)."""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, Literal, overload

from cove.engine import containers, state
from cove.engine.pyapi.common import ExecResult, Model, NotFound, api_errors
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.client import Client
    from cove.engine.container.record import Record
    from cove.engine.pyapi.images import Image


def _entries_bytes(entries: Iterator[dict[str, Any]] | builtins.list[dict[str, Any]],
                   stdout: bool, stderr: bool, timestamps: bool,
                   until: float | None) -> Iterator[bytes]:
    want = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    for e in entries:
        if e["stream"] not in want:
            continue
        if until is not None and state.parse_rfc3339(e["time"]) >= until:
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


class Container(Model):
    """A container of one state root, by name. `attrs` is its record (docker-inspect
    shaped) read afresh on each use, so `status`, `exit_code` and `health` are always
    current; after this object removed it they answer from its last record."""

    def __init__(self, attrs: Record, client: Client, root: str) -> None:
        self.client = client
        self.root = root
        self._attrs = attrs
        self.name: str = attrs["Name"]
        self._gone = False
        self._kept_logs: builtins.list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"<Container: {self.short_id} {self.name}>"

    @property
    def id(self) -> str:
        return str(self._attrs["Id"])

    @property
    def attrs(self) -> Record:
        if not self._gone:
            self.reload()
        return self._attrs

    def reload(self) -> None:
        """Read the record again (NotFound once it is gone, as docker-py)."""
        with api_errors():
            if self._gone:
                raise NotFound(f"container {self.name}", "no such container")
            rec = containers.inspect_record(self.root, self.name)
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
        with api_errors():
            containers.start(self.root, self.name)

    def stop(self, timeout: float | None = None) -> None:
        """The stop signal, SIGKILL after `timeout` seconds (10)."""
        with api_errors():
            containers.stop(self.root, self.name, 10.0 if timeout is None else timeout)

    def restart(self, timeout: float | None = None) -> None:
        with api_errors():
            containers.restart(self.root, self.name, 10.0 if timeout is None else timeout)

    def kill(self, signal: str | int | None = None) -> None:
        """A signal (SIGKILL by default), by name ("TERM", "SIGTERM") or number."""
        with api_errors():
            containers.kill(self.root, self.name, "KILL" if signal is None else signal)

    def remove(self, v: bool = False, link: bool = False, force: bool = False) -> None:
        """Remove it (`force`: even running). Its anonymous volumes (an image's VOLUME)
        go only with `v=True`, as docker's; without, they stay, unused."""
        if link:
            raise TypeError("remove(): link: cove has no links")
        self.reload()              # NotFound if gone (or the name is another's now)
        with api_errors():
            if self._attrs["State"]["Status"] in containers.ACTIVE:
                if not force:
                    raise CoveError(f"container {self.name}", "is running: stop it first "
                                                              "or use force=True")
                # killed here rather than by the engine's remove: the object keeps the
                # record of its exit
                with contextlib.suppress(CoveError):
                    containers.kill(self.root, self.name, "KILL")
                with contextlib.suppress(CoveError):
                    containers.wait(self.root, self.name, 10)
                self.reload()
            if not v:
                cdir = state.Paths(self.root).cdir(self.name)
                state.update_record(cdir, lambda r: r.__setitem__("AnonymousVolumes", []))
            containers.remove(self.root, self.name, force=force)
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
        last: Record | None = None
        while True:
            try:
                rec = containers.inspect_record(self.root, self.name) if not self._gone \
                    else None
            except CoveError as e:
                if e.why != "no such container":
                    raise
                rec = None
            if rec is not None and rec["Id"] != self.id:
                rec = None
            if rec is None:
                last = last or (self._attrs if self._gone else None)
                if last is None or last["State"]["Status"] in containers.ACTIVE:
                    # auto-removed between two looks: its exit code went with it
                    raise NotFound(f"container {self.name}",
                                   "removed before its exit code was read")
                break
            last = rec
            if cond == "not-running" and rec["State"]["Status"] not in containers.ACTIVE:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise CoveError(f"wait {self.name}", "timed out")
            containers.nap(rec, None if deadline is None else deadline - time.monotonic())
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
                    if after is None or state.parse_rfc3339(e["time"]) >= after]
            entries = kept[len(kept) - n:] if n > 0 else ([] if n == 0 else kept)
        else:
            with api_errors():
                entries = containers.logs(self.root, self.name, follow=follow, tail=n,
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
        paths = state.Paths(self.root)
        with api_errors():
            rec = containers.inspect_record(self.root, self.name)
        if rec["State"]["Status"] != "running":
            raise CoveError(f"container {self.name}", "is not running")
        args = containers.exec_argv(
            paths, runargs.environment("exec_run", "environment", environment), user, workdir)
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
        with api_errors():
            text = containers.top(self.root, self.name, ps_args.split() if ps_args else None)
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
        with api_errors():
            s = containers.stats(self.root, self.name)
        raw = s.get("Raw") or {}
        cpu = raw.get("cpu", {}).get("usage", {})
        cpu_stats = {"cpu_usage": {"total_usage": s["CPUNanos"],
                                   "usage_in_kernelmode": cpu.get("kernel", 0),
                                   "usage_in_usermode": cpu.get("user", 0)},
                     "system_cpu_usage": _system_cpu_ns(),
                     "online_cpus": os.cpu_count() or 1}
        return {"read": state.now_rfc3339(), "name": "/" + self.name, "id": self.id,
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
