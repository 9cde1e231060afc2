"""The API's router and the server's main loop (`cove serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import signal
import sys

from cove.engine.dockerapi import (
    archive,
    build,
    containers,
    hijack,
    imagearchive,
    images,
    networks,
    system,
    update,
    volumes,
)
from cove.engine.dockerapi.common import Ctx
from cove.engine.dockerapi.server import Router, Server, serve_unix
from cove.errors import CoveError


def router(ctx: Ctx) -> Router:
    r = Router()
    for mod in (system, containers, hijack, archive, images, imagearchive, build, networks,
                volumes, update):
        mod.register(r, ctx)
    return r


def default_socket() -> str:
    if os.geteuid() == 0:
        return "/run/cove/docker.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/cove-{os.getuid()}"
    return os.path.join(base, "cove", "docker.sock")


def _prepare(path: str) -> None:
    """The socket's directory, and no stale socket in the way (one that a live server
    answers on is refused: two servers on one socket would steal each other's clients)."""
    import socket
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            os.unlink(path)   # nobody answers: a leftover
        else:
            raise CoveError(f"serve {path}", "another server is listening on it")
        finally:
            s.close()


def _drain(fd: int) -> None:
    """Empty the signal wakeup pipe (its bytes only woke the loop)."""
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


def serve(root: str, path: str, group: str | None = None, quiet: bool = False) -> None:
    """Serve the API on the unix socket `path` (mode 0660; `group` its group) until
    SIGTERM or SIGINT. Containers are the engine's: they outlive the server."""
    gid = -1
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise CoveError(f"--group {group}", "no such group") from None
    _prepare(path)
    ctx = Ctx(root=root, log=(lambda s: None) if quiet else
              (lambda s: print(s, file=sys.stderr, flush=True)))
    srv = Server(router(ctx), ctx.log)

    def ready() -> None:
        os.chmod(path, 0o660)
        if gid >= 0:
            os.chown(path, -1, gid)
        if not quiet:
            print(f"cove serve: listening on unix://{path}", file=sys.stderr, flush=True)

    me = os.getpid()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(serve_unix(srv, path, ready))
        def stop(signum: int, _frame: object = None) -> None:
            if os.getpid() != me:   # a forked child of ours (the engine forks): not us
                return
            ctx.log(f"cove serve: signal {signum}: stopping (the containers run on)")
            loop.call_soon_threadsafe(task.cancel)
        # signal.signal, not loop.add_signal_handler: the latter's wakeup fd is shared
        # with the processes the engine forks, and a signal one of them gets would
        # reach this loop as if it were ours
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, stop)
        # ...but a wakeup fd of our own: the kernel may deliver the signal to a worker
        # thread, and Python runs `stop` only once the main thread leaves epoll_wait;
        # without a byte to wake it, a quiet server never did (a CI run waited 10 s).
        # A forked child's signal writes here too: that only wakes the loop, since the
        # handler runs where the signal was received.
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(rfd, _drain, rfd)
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            signal.set_wakeup_fd(old_wakeup)
            loop.remove_reader(rfd)
            os.close(rfd)
            os.close(wfd)
        for t in list(srv.conns):
            t.cancel()
    # not asyncio.run: it waits for the worker threads at the end, and an engine call
    # still running there (a container's long stop) must not hold the server's exit
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
