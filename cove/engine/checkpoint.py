"""`cove checkpoint` and `cove restore`: a running container written out with CRIU
(through `cove-runtime checkpoint`), brought back here or on another state root.

A checkpoint lives in `<container>/checkpoint/` (CRIU's images). Without
--leave-running the container stops there (CRIU kills it once written; its record says
`exited` with `Checkpointed: true`, and no restart policy restarts it); with it, it
runs on. `--export FILE` writes a tar archive that holds everything needed elsewhere:

    cove-checkpoint.json   what it is (format version, the source's root and name)
    container/             the record, config.json, hosts/resolv.conf/hostname files
    checkpoint/            CRIU's images
    upper/                 the rootfs changes (the overlay's upper directory)

`cove restore NAME` brings a checkpointed container back in place; `--name NEW` makes
a copy beside it (the source may still run: a --leave-running checkpoint); `--import
FILE` makes a new container from an archive, on a root that has the same image. The
container is restored by `cove-runtime restore` with its output FIFOs as stdout and
stderr (they replace the dumped ones: cove/runtime/checkpoint.py), then the root's
monitor adopts it (cove/engine/monitor.py: its log, its exit, its policies).

Who reaps the restored init: CRIU makes it a child of `cove-runtime restore`, so it is
orphaned when that exits. A small holder process (forked here, a child subreaper, in
its own session) runs the restore and waits for the init, writing its exit code to
`exit.code`, where the monitor of an adopted container reads it (on kernels before
6.15 nobody else could know it once init's new parent reaped it). A monitor op that
restores in a step child, as `start` creates, would make the holder unnecessary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from cove.engine import events, monctl, procs, state
from cove.engine.checkpoint_archive import CKPT
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from cove.engine.container.record import Record


def _runtime_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "failed"
    return last.removeprefix("cove-runtime: ")


def checkpoint(root: str, ref: str, *, export: str = "", leave_running: bool = False,
               tcp_established: bool = False, parent: str = "") -> Record:
    """Checkpoint running container `ref`; its record afterwards. `parent`: a pre-dump's
    image directory, relative to the checkpoint's (`cove migrate`'s last round)."""
    from cove.engine import containers

    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    cdir = paths.cdir(name)
    rec = containers.refresh_record(paths, name)
    status = rec["State"]["Status"]
    if status != "running":
        raise CoveError(f"container {name}", f"is {status}: only a running container can "
                        "be checkpointed")
    if export:
        export = os.path.abspath(export)
        if not os.path.isdir(os.path.dirname(export)):
            raise CoveError(f"--export {export}", "its directory does not exist")
    img = os.path.join(cdir, CKPT)
    shutil.rmtree(img, ignore_errors=True)
    manual = bool(rec.get("ManuallyStopped"))
    if not leave_running:  # no restart policy may bring it back meanwhile
        state.update_record(cdir, lambda r: r.update({"ManuallyStopped": True}))
    argv = [*containers.runtime(paths), "checkpoint", "--image-path", img,
            "--work-path", os.path.join(cdir, "criu.work"),  # its log outlives a failure
            *(["--leave-running"] if leave_running else []),
            *(["--tcp-established"] if tcp_established else []),
            *(["--parent-path", parent] if parent else []), name]
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - t0
    if r.returncode != 0:
        shutil.rmtree(img, ignore_errors=True)
        if not leave_running:
            state.update_record(cdir, lambda r: r.update({"ManuallyStopped": manual}))
        raise CoveError(f"checkpoint {name}", _runtime_error(r.stderr))
    if not leave_running:
        containers.wait_status(paths, name, 30)  # the monitor records the exit

    def done(r: Record) -> None:
        r["Checkpoint"] = {"Created": state.now_rfc3339(), "LeaveRunning": leave_running,
                           "Seconds": round(took, 3)}
        if not leave_running:
            r["State"].update({"Checkpointed": True, "ExitCode": 0, "Error": ""})
    rec = state.update_record(cdir, done)
    if export:
        from cove.engine.checkpoint_archive import write

        write(paths, name, export)
    events.emit(root, "container", "checkpoint", rec)
    return rec


def restore(root: str, ref: str = "", *, import_file: str = "", new_name: str = "",
            tcp_established: bool = False) -> Record:
    """Restore checkpointed container `ref` in place, a copy of it as `new_name`, or a
    new container from the archive `import_file`; its record, running."""
    from cove.engine import checkpoint_archive

    paths = state.Paths(root)
    made = False  # a container this call made: removed again if the restore fails
    if import_file:
        if ref:
            raise CoveError("restore", "give a container or --import FILE, not both")
        name = checkpoint_archive.unpack(paths, os.path.abspath(import_file), new_name)
        made = True
    else:
        if not ref:
            raise CoveError("restore", "which container? (NAME, or --import FILE)")
        src = state.lookup(paths, ref)
        if not os.path.isfile(os.path.join(paths.cdir(src), CKPT, "inventory.img")):
            raise CoveError(f"container {src}", f"has no checkpoint (`cove checkpoint "
                            f"{src}` makes one)")
        if new_name and new_name != src:
            name = checkpoint_archive.copy(paths, src, new_name)
            made = True
        else:
            name = src
            from cove.engine import containers

            status = containers.refresh_record(paths, name)["State"]["Status"]
            if status in ("running", "paused", "restarting"):
                raise CoveError(f"container {name}", f"is {status}: restore it under "
                                "another name (--name NEW)")
    try:
        return _restore(paths, name, tcp_established)
    except BaseException:
        if made:
            checkpoint_archive.discard(paths, name)
        raise


def _restore(paths: state.Paths, name: str, tcp_established: bool) -> Record:
    from cove.engine import containers, teardown
    from cove.image import snapshots
    from cove.image.store import Store

    cdir = paths.cdir(name)
    loaded = state.load_record(cdir, strict=True)
    if loaded is None:
        raise CoveError(f"container {name}", "no such container")
    rec = loaded
    containers.rt_delete(paths, name)
    snapshots.remount(Store(paths.root), name)
    bridged = rec["HostConfig"].get("NetworkMode") not in ("host", "none")
    try:
        if bridged:
            from cove.engine import checkpoint_net, network

            if not checkpoint_net.attach(paths, name, rec):  # its old IP and MAC
                network.attach(paths, name)
        pid = _hold(paths, name, bool(rec["Config"].get("OpenStdin")),
                    tcp_established)
    except BaseException:
        teardown.cleanup(paths, name, rec)
        raise
    pstart = state.proc_start_time(pid)

    def running(r: Record) -> None:
        r["State"].update({"Status": "running", "Running": True, "Paused": False, "Pid": pid,
                           "PidStart": pstart, "ExitCode": 0, "Error": "",
                           "StartedAt": state.now_rfc3339(),
                           "FinishedAt": "0001-01-01T00:00:00Z", "Checkpointed": False,
                           "Restored": True})
        r["ManuallyStopped"] = False
        r["MonitorPid"] = 0
    rec = state.update_record(cdir, running)
    line = monctl.request(paths.root, "adopt", name)
    if line != "ok":
        raise CoveError(f"restore {name}", f"the monitor did not take it: {line}")
    events.emit(paths.root, "container", "restore", rec)
    return state.load_record(cdir) or rec


def _hold(paths: state.Paths, name: str, open_stdin: bool, tcp: bool) -> int:
    """Fork the holder (see the module's doc); the restored init's pid once it runs,
    or the runtime's reason in one line."""
    from cove.engine import containers

    cdir = paths.cdir(name)
    for p in procs.fifo_paths(cdir):
        if not os.path.exists(p):
            os.mkfifo(p, 0o600)
    for old in (procs.EXIT_FILE, "init.pid"):
        try:
            os.unlink(os.path.join(cdir, old))
        except FileNotFoundError:
            pass
    log = os.path.join(cdir, "restore.log")
    pid_file = os.path.join(cdir, "init.pid")
    argv = [*containers.runtime(paths), "--log", log, "restore", "--detach", "--bundle",
            cdir, "--image-path", os.path.join(cdir, CKPT), "--work-path",
            os.path.join(cdir, "criu.work"), "--pid-file", pid_file,
            *(["--tcp-established"] if tcp else []), name]
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the holder
        code = 1
        try:
            os.close(r)
            code = _holder(cdir, argv, open_stdin, w)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        line = f.readline().decode(errors="replace").strip()
    if line.startswith("ok "):
        return int(line[3:])
    try:
        os.waitpid(child, 0)
    except ChildProcessError:
        pass
    why = line.removeprefix("error: ") or "the restore's holder died"
    raise CoveError(f"restore {name}", why)


def _holder(cdir: str, argv: list[str], open_stdin: bool, report: int) -> int:
    """In the forked holder: restore, say the pid on `report`, reap the init, write its
    exit code for the monitor."""
    from cove.sys import libc

    os.setsid()
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    null = os.open(os.devnull, os.O_RDWR)
    stdin = procs.open_stdin(cdir, open_stdin) if open_stdin else -1
    ends = [os.open(p, os.O_RDWR | os.O_CLOEXEC) for p in procs.fifo_paths(cdir)]
    try:
        rc = subprocess.call(argv, stdin=stdin if stdin >= 0 else null, stdout=ends[0],
                             stderr=ends[1], cwd=cdir)
    finally:
        for fd in (*ends, *([stdin] if stdin >= 0 else [])):
            os.close(fd)
    if rc != 0:
        why = _log_error(os.path.join(cdir, "restore.log")) or f"exit status {rc}"
        os.write(report, f"error: {why}\n".encode())
        return 1
    try:
        with open(os.path.join(cdir, "init.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        os.write(report, f"error: no pid from the runtime: {e}\n".encode())
        return 1
    os.write(report, f"ok {pid}\n".encode())
    os.close(report)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0  # not ours after all: the monitor reads what it can
        except InterruptedError:
            continue
        if got == pid:
            state.write_atomic(os.path.join(cdir, procs.EXIT_FILE),
                               f"{procs.shell_code(status)} {pid}\n".encode())
            return 0


def _log_error(path: str) -> str:
    """The last error line the runtime wrote to its --log (text format)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if "level=error" in ln]
    except OSError:
        return ""
    if not lines:
        return ""
    msg = lines[-1].split('msg="', 1)[-1].rstrip().removesuffix('"')
    return msg

