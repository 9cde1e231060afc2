"""`run`: create + start, then (attached) the container's output copied out until it
exits, its stdin fed from ours with -i and the signals meant for us passed on; `run
-it`, the runtime's own foreground run relaying the terminal (`run_tty`)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from cove.engine import hostconfig, procs, state
from cove.engine.container.create import create
from cove.engine.container.mounts import drop_volumes
from cove.engine.container.queries import logs
from cove.engine.container.record import Record
from cove.engine.container.rtcmd import rt_quiet
from cove.engine.container.sigproxy import signals
from cove.engine.container.start import start
from cove.engine.container.stop import kill, remove, stop, wait, wait_status
from cove.engine.options import RunOptions
from cove.errors import CoveError


def run(root: str, o: RunOptions, out: Any = None, err: Any = None, *,
        stdin: int | None = None, sig_proxy: bool = False) -> tuple[Record, int]:
    """create + start; attached (not `detach`), copy its output to `out`/`err` until it
    exits and return its exit code (and remove it with `rm`).

    With `interactive`, the fd `stdin` (ours by default) is the container's stdin until
    its EOF, which the container sees (`printf ... | cove run -i IMAGE wc -l`); without,
    the container's stdin is /dev/null, as docker's. With `sig_proxy` (the CLI's, as
    docker's --sig-proxy), the signals that would end this process (^C on its terminal,
    a kill) go to the container instead: it decides, and the run ends with it; without
    (the Python API), ^C stops the container."""
    if o.tty and not o.detach:
        if o.interactive and not os.isatty(0):
            # a pipe relayed to a pty whose reader never sees its EOF (docker's check)
            raise CoveError("run -it", "the input device is not a TTY")
        from cove.engine import ttyattach  # under the monitor, relayed (ttyattach.py)
        return ttyattach.run(root, o)
    paths = state.Paths(root)
    rec, name, fifo = _create_start(root, paths, o)
    if o.detach:
        return rec, 0
    if fifo is not None:
        # the container holds the read end now: ours goes, and so does the FIFO (a
        # later start gets /dev/null, as docker's restarted containers)
        path, placeholder, w = fifo
        os.close(placeholder)
        with contextlib.suppress(OSError):
            os.unlink(path)
        import threading
        threading.Thread(target=_feed_stdin, args=(0 if stdin is None else stdin, w),
                         name=f"stdin {name}", daemon=True).start()
    code = _follow(root, paths, o, name, out, err, sig_proxy)
    if o.rm:
        remove(root, name, force=True)
    return rec, code


def _create_start(root: str, paths: state.Paths, o: RunOptions
                  ) -> tuple[Record, str, tuple[str, int, int] | None]:
    """create + start, and `run -i`'s stdin FIFO (`_stdin_fifo`): (the started
    container's record, its name, the FIFO or None). A failure undoes it all (the
    container, its new volumes, the --cidfile) and is docker's 126/127 when the command
    can't be run."""
    rec = create(root, o)
    name = rec["Name"]
    fifo: tuple[str, int, int] | None = None
    try:
        if o.interactive and not o.detach:
            fifo = _stdin_fifo(paths.cdir(name))
        elif o.interactive:
            # `run -d -i`: docker's OpenStdin; the container keeps its stdin FIFO open
            # (procs.open_stdin) and `cove attach` writes to it
            state.update_record(paths.cdir(name),
                                lambda r: r["Config"].update({"OpenStdin": True}))
        rec = start(root, name)
    except BaseException:
        if fifo is not None:
            os.close(fifo[1])
            os.close(fifo[2])
        with contextlib.suppress(Exception):
            remove(root, name, force=True)
        drop_volumes(root, rec.get("CreatedVolumes") or [])
        if o.cidfile:
            with contextlib.suppress(OSError):
                os.unlink(o.cidfile)
        failed = sys.exc_info()[1]
        if isinstance(failed, CoveError):
            # a command that can't be run: docker's message and exit status (126/127)
            mapped = hostconfig.exec_error(failed)
            if mapped is not None:
                raise mapped from None
        raise
    return rec, name, fifo


def _follow(root: str, paths: state.Paths, o: RunOptions, name: str, out: Any, err: Any,
            sig_proxy: bool) -> int:
    """An attached run's output copied to `out`/`err` until the container exits: its
    exit code (130 after ^C, which stops it)."""

    def forward(signum: int, _frame: object) -> None:
        rt_quiet(paths, "kill", name, str(signum))
    try:
        with signals(forward if sig_proxy else None):
            for e in logs(root, name, follow=True):
                stream = (err or sys.stderr) if e["stream"] == "stderr" \
                    else (out or sys.stdout)
                stream.write(e["log"])
                stream.flush()
            code = wait(root, name)
    except KeyboardInterrupt:
        stop(root, name, timeout=10)
        code = 130
    except BrokenPipeError:
        # our reader left (`cove run IMAGE yes | head -1`): the container ends, as the
        # program would in the pipeline (by SIGKILL: an init ignores SIGPIPE), rather
        # than write to its log for ever, and --rm removes it
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        wait_status(paths, name, 10)
        if o.rm:
            remove(root, name, force=True)
        raise
    return code


def _stdin_fifo(cdir: str) -> tuple[str, int, int]:
    """`run -i`: `<cdir>/stdin.fifo`, which the monitor gives the container as its stdin
    (cove/engine/monitor.py), and its write end, opened now so that the container never
    finds the FIFO without a writer (a read would be an EOF at once). A placeholder read
    end lets the write end open without blocking; the caller closes it once the
    container holds its own. (path, placeholder, write end)."""
    path = os.path.join(cdir, procs.STDIN_FIFO)
    os.mkfifo(path, 0o600)
    placeholder = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        w = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(placeholder)
        raise
    return path, placeholder, w


def _feed_stdin(src: int, w: int) -> None:
    """Copy `src` into the container's stdin until `src` ends, then close it: the
    container reads EOF (docker's StdinOnce). A container that exits (or closes its
    stdin) first ends the copy with EPIPE (Python ignores SIGPIPE)."""
    try:
        while data := os.read(src, 65536):
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
    except OSError:
        pass
    finally:
        os.close(w)
