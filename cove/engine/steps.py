"""The blocking steps of a container's run — `cove-runtime create` and `start` before
it, `delete`, the network and rootfs teardown and the exit record after it — each run
in a child the monitor forks (cove/engine/monitor.py).

Why children: the monitor is one process for every container of a state root and must
keep copying their output while one of them starts or stops (a vm handler's create
boots a guest for seconds); and what these steps import (pyroute2 for a bridge network,
the image store for `--rm`) would otherwise stay in the monitor's memory for good. The
child is not a subreaper, so the init the runtime leaves behind is reparented to the
monitor, the next subreaper up: the monitor is the parent of every init it watches.
"""

from __future__ import annotations

import _signal as signal
import os
import socket
import sys

from cove.engine import events, procs, state, teardown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cove.engine.container.record import Record


def runtime_cmd(paths: state.Paths, env: dict[str, str]) -> list[str]:
    rt = env.get("COVE_RUNTIME") or os.path.join(os.path.dirname(sys.executable),
                                                "cove-runtime")
    return [rt, "--root", paths.runtime_root]


# -- the runtime, in-process ---------------------------------------------------------------
#
# Each `cove-runtime` command costs ~11 ms before it does anything (an interpreter and
# the runtime's imports), three of them per run. When the runtime asked for is this
# source tree's own cove-runtime and the container uses the namespaces handler, a step
# runs the verb through the runtime's public entry point (cove.runtime.namespaces) in a
# child forked from the monitor, which has imported the runtime's modules once: the same
# code, the same process state (fds 0-2, the environment, default signals) as the binary
# would have, without the start-up.

_OURS: dict[str, bool] = {}


def in_process(env: dict[str, str], cdir: str = "") -> bool:
    """Whether the runtime asked for in `env` is this tree's cove-runtime (checked once
    per path: its launcher imports cove.cli.runtime from our source tree) and the
    container's bundle names no other handler. COVE_RUNTIME_EXEC=1 turns it off."""
    if env.get("COVE_RUNTIME_EXEC") == "1":
        return False
    rt = env.get("COVE_RUNTIME") or os.path.join(os.path.dirname(sys.executable),
                                                "cove-runtime")
    if rt not in _OURS:
        from cove.engine import spawn
        try:
            with open(rt, "rb") as f:
                head = f.read(1024)
            if head.startswith(b"\x7fELF"):  # the native front: its Python launcher
                with open(rt + ".py", "rb") as f:
                    head = f.read(1024)
            # (`from cove.cli.runtime import main`, or the boot shim's
            # `main('cove.cli.runtime')`)
            _OURS[rt] = b"cove.cli.runtime" in head and \
                spawn.search_path()[0].encode() in head
        except OSError:
            _OURS[rt] = False
    if not _OURS[rt]:
        return False
    if cdir:
        try:
            with open(os.path.join(cdir, "config.json"), "rb") as f:
                return b"io.cove.isolation" not in f.read()
        except OSError:
            return False
    return True


def _other_handler(paths: state.Paths, name: str) -> bool:
    """Whether the runtime's state of `name` names a handler (vm, gvisor): those verbs
    go through the binary, which loads that handler."""
    try:
        with open(os.path.join(paths.runtime_root, name, "state.json"), "rb") as f:
            return b'"handler"' in f.read()
    except OSError:
        return False


def preload_network(rec: Record) -> bool:
    """In the monitor, before its first container on a bridge network: import what
    tearing it down imports (the network modules; no longer pyroute2, ~150 ms and
    ~10 MiB), once, so that every finishing step child has it. Memory the monitor
    then keeps, only where bridges are used. Whether it did (the monitor calls it until it has)."""
    if rec.get("HostConfig", {}).get("NetworkMode") in ("host", "none", None) or \
            os.geteuid() != 0:
        return False
    try:
        # (not pyroute2: a run's veth, address, route and teardown are
        # cove/engine/rtnl.py's few requests; pyroute2 only makes a missing bridge)
        from cove.engine import bridge, network, rtnl  # noqa: F401
    except ImportError:
        pass
    return True


def preload() -> None:
    """Import what the runtime's create, start and delete import (in the monitor, once:
    its step children then share it). cove.runtime.preload() leaves out what create
    imports only once it runs (the cgroup managers, the container's init, its rootfs
    and seccomp): ~3.5 ms of imports in every create child, paid here once instead."""
    import cove.runtime
    cove.runtime.preload()
    for mod in ("cgroups.resolve", "cgroups.v1", "cgroups.v2", "cgroups.hybrid",
                "bindsources", "init", "rootfs", "seccomp"):
        try:
            __import__(f"cove.runtime.{mod}")
        except ImportError:  # pragma: no cover - a runtime without it: loaded when used
            pass


def _call(fn: Callable[[], object]) -> int:
    """Run `fn` (a runtime verb) as the binary would; its exit status. Errors are the
    binary's line on fd 2."""
    from cove.errors import CoveError, os_why
    try:
        fn()
        return 0
    except CoveError as e:
        os.write(2, f"cove-runtime: {e}\n".encode(errors="replace"))
        return e.code
    except OSError as e:
        os.write(2, f"cove-runtime: {os_why(e)}\n".encode(errors="replace"))
    return 1


def _verb(fn: Callable[[], object], env: dict[str, str], fds: tuple[int, int, int],
          then: Callable[[], int] | None = None) -> int:
    """Run `fn` in a child with `fds` as its stdin, stdout and stderr, as the
    cove-runtime binary would; once it succeeded, `then()` in the same child (create,
    then start: one fork less). The child's exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for i, fd in enumerate(fds):
                if fd != i:
                    os.dup2(fd, i)
            for sig in procs.DEFAULT_SIGNALS:
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts
            os.environ.clear()
            os.environ.update(env)
            code = _call(fn)
            if code == 0 and then is not None:
                code = then()
        except BaseException as e:
            try:
                os.write(2, f"cove-runtime: {type(e).__name__}: {e}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    status = procs.wait_child(pid)
    return os.waitstatus_to_exitcode(status)


def _verb_fn(paths: state.Paths, argv: list[str]) -> Callable[[], object]:
    """The in-process runtime verb of `cove-runtime --root R ARGV...`."""
    from cove.runtime import CreateOptions, namespaces
    root = paths.runtime_root
    if argv[0] == "create":
        o = CreateOptions(root, argv[-1], argv[argv.index("--bundle") + 1],
                          argv[argv.index("--pid-file") + 1],
                          argv[argv.index("--console-socket") + 1]
                          if "--console-socket" in argv else "",
                          rootless=os.geteuid() != 0)  # as the binary's --rootless auto
        return lambda: namespaces.create(o)
    if argv[0] == "start":
        return lambda: namespaces.start(root, argv[-1])
    return lambda: namespaces.delete(root, argv[-1], True)


def _drain(r: int) -> str:
    try:
        os.set_blocking(r, False)
        got = os.read(r, 65536)
    except OSError:
        got = b""
    finally:
        os.close(r)
    return got.decode(errors="replace").strip()


def rt_call(paths: state.Paths, env: dict[str, str], cdir: str, argv: list[str],
            stdin: int = -1, stdout: int = -1, stderr: int = -1) -> tuple[int, str]:
    """`cove-runtime --root R ARGV...` (create, start, delete --force): in-process when
    in_process() says so, else the binary; its exit code and (unless redirected) its
    stderr."""
    if not in_process(env, cdir if argv[0] == "create" else "") or \
            (argv[0] != "create" and _other_handler(paths, argv[-1])):
        return procs.call([*runtime_cmd(paths, env), *argv], stdout=stdout, stderr=stderr,
                          stdin=stdin, env=env)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        code = _verb(_verb_fn(paths, argv), env,
                     (null if stdin < 0 else stdin, null if stdout < 0 else stdout,
                      w if stderr < 0 else stderr))
    finally:
        os.close(w)
        os.close(null)
    return code, _drain(r)


def rt_create_start(paths: state.Paths, env: dict[str, str], cdir: str, argv: list[str],
                    fds: tuple[int, int, int]) -> tuple[int, int, str, int | None]:
    """In-process only: `create ARGV` with `fds` as its stdio (a stdin of -1: /dev/null),
    then `start` in the same
    child (a fork and a wait less than two rt_calls). The init's start time is read
    between the two (after start a short-lived init may be gone, reaped by the
    monitor). (create's status, start's, start's stderr, the init's start time)."""
    name = argv[-1]
    pid_file = argv[argv.index("--pid-file") + 1]
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    mr, mw = os.pipe()

    def start() -> int:
        with open(pid_file) as f:
            pstart = state.proc_start_time(int(f.read().strip()))
        os.write(mw, f"c {pstart or ''}".encode())
        for i, fd in enumerate((null, null, w)):
            os.dup2(fd, i)
        return _call(_verb_fn(paths, ["start", name]))
    try:
        code = _verb(_verb_fn(paths, argv), env, (null if fds[0] < 0 else fds[0], *fds[1:]),
                     then=start)
    finally:
        for fd in (w, mw, null):
            os.close(fd)
    mark = _drain(mr)
    if not mark.startswith("c"):
        return code, -1, _drain(r), None
    return 0, code, _drain(r), int(mark[2:]) if mark[2:].isdigit() else None


def _fifo_text(rfds: list[int]) -> str:
    out = b""
    for fd in rfds:
        try:
            out += os.read(fd, 65536)
        except OSError:
            pass
    return out.decode(errors="replace").strip()


def _console(cdir: str) -> socket.socket:
    """`<cdir>/console.sock`, listening, for a container with a terminal: the runtime
    connects to it during create and sends the pty's master. Bound by a relative path
    (a socket's path has at most 107 bytes), so the caller's cwd is `cdir` from here on,
    and the runtime (in-process or the binary) is given "console.sock"."""
    os.chdir(cdir)
    try:
        os.unlink("console.sock")
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    srv.bind("console.sock")
    srv.listen(1)
    return srv


def _pass_master(srv: socket.socket, to: int) -> None:
    """The master the runtime sent (its connection is queued: create has returned) on
    to the monitor, over `to` (SCM_RIGHTS). An fd in flight is still held: the
    terminal is never without a holder, so never hung up."""
    srv.settimeout(5)
    try:
        conn, _ = srv.accept()
    finally:
        srv.close()
        try:
            os.unlink("console.sock")
        except OSError:
            pass
    with conn:
        conn.settimeout(5)
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1, socket.MSG_CMSG_CLOEXEC)
    if not fds:
        raise RuntimeError("the runtime sent no terminal")
    out = socket.socket(fileno=os.dup(to))
    try:
        socket.send_fds(out, [b"m"], fds)
    finally:
        out.close()
        os.close(fds[0])


def _create_start(paths: state.Paths, env: dict[str, str], name: str, rfds: list[int],
                  stdin: int, console: socket.socket | None, tty: int
                  ) -> tuple[int, int | None]:
    """The runtime's create, then (a terminal's master passed on to the monitor first)
    its start: in one child when the runtime runs in-process and there is no terminal.
    The init's pid and start time; RuntimeError with the runtime's words if it failed
    (nothing of it left)."""
    cdir = paths.cdir(name)
    pid_file = os.path.join(cdir, "init.pid")
    argv = ["create", "--bundle", cdir, "--pid-file", pid_file,
            *(["--console-socket", "console.sock"] if console else []), name]
    ends = [os.open(p, os.O_RDWR | os.O_CLOEXEC) for p in procs.fifo_paths(cdir)]
    started: int | None = None
    try:
        if console is None and in_process(env, cdir):
            rc, started, err, pstart = rt_create_start(paths, env, cdir, argv,
                                                       (stdin, ends[0], ends[1]))
        else:
            rc, _ = rt_call(paths, env, cdir, argv, stdout=ends[0], stderr=ends[1],
                            stdin=stdin)
    finally:
        for fd in (*ends, stdin) if stdin >= 0 else ends:
            os.close(fd)
    if rc != 0:
        raise RuntimeError(_fifo_text(rfds) or f"cove-runtime create: exit status {rc}")
    if console is not None:
        try:
            _pass_master(console, tty)
        except Exception:
            rt_call(paths, env, cdir, ["delete", "--force", name])
            raise
    with open(pid_file) as f:
        pid = int(f.read().strip())
    if started is None:
        pstart = state.proc_start_time(pid)
        started, err = rt_call(paths, env, cdir, ["start", name])
    if started != 0:
        rt_call(paths, env, cdir, ["delete", "--force", name])
        raise RuntimeError(err or "cove-runtime start failed")
    return pid, pstart


def start(root: str, name: str, env: dict[str, str], rfds: list[int], sync: int,
          monitor: int, keeper: int, tty: int = -1) -> int:
    """Create and start container `name` (its FIFOs made, their read ends `rfds` held
    by the monitor), record it running and say "ok" on `sync`; or say "error: ..." and
    record why. The exit status: 0 once it runs. A container with a terminal (Tty)
    gets the runtime's pty, whose master goes to the monitor over the socket `tty`."""
    paths = state.Paths(root)
    cdir = paths.cdir(name)
    try:
        rec = state.load_record(cdir)
        if rec is None:
            raise RuntimeError("its record is gone")
        for old in (procs.EXIT_FILE, "init.pid"):
            try:
                os.unlink(os.path.join(cdir, old))
            except FileNotFoundError:
                pass
        console = _console(cdir) if tty >= 0 else None
        stdin = -1 if console is not None else \
            procs.open_stdin(cdir, bool(rec.get("Config", {}).get("OpenStdin")))
        pid, pstart = _create_start(paths, env, name, rfds, stdin, console, tty)

        def running(r: Record) -> None:
            st = r["State"]
            r["ZygotePid"], r["ZygoteStart"] = keeper, state.proc_start_time(keeper)
            st.update({"Status": "running", "Running": True, "Pid": pid,
                       "PidStart": pstart, "ExitCode": 0, "Error": "",
                       "StartedAt": state.now_rfc3339(), "FinishedAt": "0001-01-01T00:00:00Z"})
            if r["Config"].get("Healthcheck"):
                st["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
            r["MonitorPid"] = monitor
        rec = state.update_record(cdir, running)
        events.emit(root, "container", "start", rec)
    except Exception as e:
        msg = str(e).replace("\n", " ") or type(e).__name__
        try:
            os.write(sync, f"error: {msg}\n".encode())
        except OSError:
            pass
        try:
            finish(root, name, 127, msg, state.now_rfc3339(), 0, env, auto_remove=False)
        except Exception as e2:
            print(f"cove-monitor: {name}: {e2}", file=sys.stderr, flush=True)
        return 1
    try:
        os.write(sync, b"ok\n")
    except OSError:
        pass
    return 0


def finish(root: str, name: str, code: int, error: str, finished: str, pid: int,
           env: dict[str, str], auto_remove: bool = True) -> None:
    """After init `pid` exited with `code` (its output already in the log): the runtime's
    state deleted, the network and rootfs undone, the exit recorded and a `--rm -d`
    container removed (the monitor applies its restart policy once this is done)."""
    paths = state.Paths(root)
    # `cove rename` while it ran: the runtime's state and the network know the new name
    # (cleanup settles the rest: cove/engine/ops.py)
    name = teardown.current_name(paths.cdir(name), name)
    cdir = paths.cdir(name)
    if in_process(env) and not _other_handler(paths, name):
        # in this child itself, which ends after this step: a fork and a wait less
        # (its environment is already `env`: the monitor's own)
        _call(_verb_fn(paths, ["delete", "--force", name]))
    else:
        rt_call(paths, env, cdir, ["delete", "--force", name])
    teardown.cleanup(paths, name, state.load_record(cdir) or {})
    changed = False

    def done(r: Record) -> None:
        nonlocal changed
        st = r["State"]
        if pid and int(st.get("Pid") or 0) not in (pid, 0):
            return  # started again meanwhile: not ours to finish
        changed = True
        st.update({"Status": "exited", "Running": False, "Pid": 0, "ExitCode": code,
                   "FinishedAt": finished, "Error": error})
        health = st.get("Health")
        if health:
            health["Status"] = "unhealthy" if health["Status"] == "unhealthy" \
                else "starting"
        r["MonitorPid"] = 0
    rec = state.update_record(cdir, done)
    if not changed:
        return
    events.emit(paths.root, "container", "die", rec, exitCode=code)
    if auto_remove and rec.get("HostConfig", {}).get("AutoRemove"):
        try:
            from cove.engine import containers
            containers.remove(paths.root, name, force=True)
        except Exception:
            pass
