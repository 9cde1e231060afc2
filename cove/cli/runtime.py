"""`cove-runtime`: runc's command line over cove.runtime.

Thin by rule: parse a verb's flags (VERBS: one table, each verb with its own flags),
call that verb of the container's handler (cove.runtime.handler.Handler: the namespaces
runtime, or the vm or gvisor handler), print. Errors become one line,
`cove-runtime: <what>: <why>`, on stderr and (as JSON or text) in --log.
"""

from __future__ import annotations

import posix
import sys
import time

from cove.cli import flags
from cove.errors import CoveError, os_why
from cove.runtime import lite

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _thread
    from collections.abc import Callable

    from cove.runtime import CreateOptions
    from cove.runtime.handler import Handler

GLOBAL: flags.Spec = {"root": "str", "log": "str", "log-format": "str", "debug": "bool",
                  "systemd-cgroup": "bool", "rootless": "str", "criu": "str",
                  "version": "bool", "help": "bool"}
GLOBAL_ALIASES = {"v": "version", "h": "help"}


class Log:
    """--log / --log-format: where containerd's shim and podman look for our errors."""

    def __init__(self, path: str, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        now = time.time_ns()
        from cove.runtime.state import rfc3339

        if self.fmt == "json":
            from cove.oci import jsonio

            line = jsonio.dumps({"level": level, "msg": msg, "time": rfc3339(now)})
        else:
            line = f'time="{rfc3339(now)}" level={level} msg="{msg}"'
        try:
            fd = posix.open(self.path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT
                            | posix.O_CLOEXEC, 0o644)
            try:
                posix.write(fd, (line + "\n").encode())
            finally:
                posix.close(fd)
        except OSError:
            pass


def _usage() -> str:
    lines = ["usage: cove-runtime [global flags] COMMAND [flags] [args]", "",
             "An OCI runtime, command-line compatible with runc.", "", "Commands:"]
    lines += [f"  {n:<10}{v[3]}" for n, v in VERBS.items()]
    lines += ["", "Global flags:",
              "  --root DIR          state directory (default /run/cove-runtime; not root:",
              "                      $XDG_RUNTIME_DIR/cove-runtime)",
              "  --log FILE          also write messages to FILE",
              "  --log-format FMT    text or json",
              "  --debug             log debug messages",
              "  --systemd-cgroup    use systemd's cgroup driver (needs systemd)",
              "  --rootless MODE     auto, true or false",
              "  --version, -v       print the version",
              "  --help, -h          this help"]
    return "\n".join(lines) + "\n"


def _version() -> str:
    from cove import __version__
    from cove.oci import OCI_VERSION
    from cove.runtime.features import libseccomp_version

    commit = "unknown"
    here = lite.dirname(__file__)
    try:
        with open(lite.join(here, "..", "_commit")) as f:
            commit = f.read().strip() or commit
    except OSError:
        pass
    return (f"cove-runtime version {__version__}\ncommit: {commit}\nspec: {OCI_VERSION}\n"
            f"python: {sys.version.split()[0]}\nlibseccomp: {libseccomp_version() or 'none'}\n")


def _one(args: list[str], cmd: str, extra_ok: bool = False) -> str:
    if not args:
        raise CoveError(cmd, "container id cannot be empty")
    if len(args) > 1 and not extra_ok:
        raise CoveError(cmd, f"expected one container id, got {len(args)} arguments")
    return args[0]


def _rootless(mode: str) -> bool:
    if mode in ("", "auto"):
        return posix.geteuid() != 0
    if mode in ("true", "false"):
        return mode == "true"
    raise CoveError(f"--rootless {mode}", "expected auto, true or false")


class Ctx:
    """The global flags a verb needs, and the handler an entry point forces."""

    def __init__(self, root: str, rootless: bool, systemd: bool, forced: str) -> None:
        self.root = root
        self.rootless = rootless
        self.systemd = systemd
        self.forced = forced


def dispatch(argv: list[str], log: Log, handler: str = "") -> int:
    g = flags.parse(argv, GLOBAL, GLOBAL_ALIASES)
    log.path = g.s("log")
    log.fmt = g.s("log-format", "text")
    log.debug_on = g.b("debug")
    if log.fmt not in ("text", "json"):
        raise CoveError(f"--log-format {log.fmt}", "expected text or json")
    if g.b("version"):
        sys.stdout.write(_version())
        return 0
    if g.b("help") or not g.args:
        sys.stdout.write(_usage())
        return 0 if g.b("help") else 1
    cmd, rest = g.args[0], g.args[1:]
    if cmd == "help":
        sys.stdout.write(_usage())
        return 0
    if cmd not in VERBS:
        raise CoveError(f"command {cmd!r}", "no such command (see cove-runtime --help)")
    fn, fspec, aliases, what = VERBS[cmd]
    f = flags.parse(rest, {**fspec, "help": "bool"}, {**aliases, "h": "help"}, f"{cmd}: ")
    if f.b("help"):
        sys.stdout.write(f"usage: cove-runtime {cmd} [flags] ...\n  {what}\nflags: "
                         + " ".join(f"--{k}" for k in fspec) + "\n")
        return 0
    root = g.s("root")
    if not root and cmd not in ("spec", "features"):
        from cove.runtime.state import default_root

        root = default_root()
    if g.b("systemd-cgroup") and not lite.isdir("/run/systemd/system"):
        raise CoveError("--systemd-cgroup", "systemd is not running on this host")
    rootless = _rootless(g.s("rootless"))
    if log.debug_on:
        log.write("debug", f"{cmd} {' '.join(rest)} (root {root}, rootless {rootless})")
    code = fn(Ctx(root, rootless, g.b("systemd-cgroup"), handler), f)
    if log.debug_on:
        log.write("debug", f"{cmd}: exit status {code}")
    return code


# -- which handler --------------------------------------------------------------------

def _load(name: str) -> Handler:
    if name == "container":
        from cove.runtime import namespaces

        return namespaces
    from cove.cli.isolation import load

    return load(name)


def _for_bundle(c: Ctx, bundle: str) -> Handler:
    """The handler of a new container, cheaply: no JSON parsing unless the config names
    one. The entry point's (cove-runtime-vm, -gvisor) or the bundle's annotation
    io.cove.isolation."""
    try:
        with open(lite.join(bundle or ".", "config.json"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return _load(c.forced or "container")  # create reports the missing config
    if b"io.cove.isolation" not in raw and not c.forced:
        return _load("container")
    from cove.cli.isolation import from_config

    return _load(from_config(raw, c.forced))


def _for_id(c: Ctx, cid: str) -> Handler:
    """The handler recorded in the container's state (no JSON parsing unless it names
    one); the container handler reports a missing or bad id."""
    if not cid or "/" in cid or cid in (".", ".."):
        return _load("container")
    try:
        with open(lite.join(c.root, cid, "state.json"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return _load("container")
    if b'"handler"' not in raw:
        return _load("container")
    from cove.cli.isolation import from_state

    return _load(from_state(raw))


# -- the verbs: each with its flags ---------------------------------------------------

def _create_options(c: Ctx, f: flags.Parsed, cmd: str) -> CreateOptions:
    from cove.runtime import CreateOptions

    return CreateOptions(c.root, _one(f.args, cmd), f.s("bundle"), f.s("pid-file"),
                         f.s("console-socket"), f.i("preserve-fds"), f.b("no-pivot"),
                         c.rootless, c.systemd)


def _prewarm(c: Ctx, h: Handler) -> _thread.LockType | None:
    """The namespaces runtime's cgroup prewarm under the systemd driver, started first:
    it overlaps the imports and parsing of `create` with the wait of systemd's move of
    init. With cgroupfs, init is born in its cgroups and no move waits."""
    from cove.runtime import namespaces

    if h is not namespaces or not c.systemd:
        return None
    from cove.runtime.cgroups.prewarm import prewarm

    return prewarm()


CREATE_FLAGS: flags.Spec = {"bundle": "str", "pid-file": "str", "console-socket": "str",
                        "preserve-fds": "int", "no-pivot": "bool", "no-new-keyring": "bool",
                        "pidfd-socket": "str"}


def _create(c: Ctx, f: flags.Parsed) -> int:
    h = _for_bundle(c, f.s("bundle"))
    warm = _prewarm(c, h)
    o = _create_options(c, f, "create")
    o.warm = warm
    h.create(o)
    return 0


RUN_FLAGS: flags.Spec = {"bundle": "str", "pid-file": "str", "console-socket": "str",
                     "preserve-fds": "int", "no-pivot": "bool", "no-new-keyring": "bool",
                     "detach": "bool", "keep": "bool", "no-subreaper": "bool"}


def _run(c: Ctx, f: flags.Parsed) -> int:
    h = _for_bundle(c, f.s("bundle"))
    warm = _prewarm(c, h)
    o = _create_options(c, f, "run")
    o.warm = warm
    return h.run(o, f.b("detach"))


def _start(c: Ctx, f: flags.Parsed) -> int:
    cid = _one(f.args, "start")
    _for_id(c, cid).start(c.root, cid)
    return 0


def _state(c: Ctx, f: flags.Parsed) -> int:
    from cove.oci import jsonio

    cid = _one(f.args, "state")
    sys.stdout.write(jsonio.dumps(_for_id(c, cid).state(c.root, cid), indent=2) + "\n")
    return 0


KILL_FLAGS: flags.Spec = {"all": "bool"}


def _kill(c: Ctx, f: flags.Parsed) -> int:
    from cove.runtime.signals import parse_signal

    cid = _one(f.args, "kill", extra_ok=True)
    if len(f.args) > 2:
        raise CoveError("kill", "usage: kill [--all] ID [SIGNAL]")
    sig = parse_signal(f.args[1] if len(f.args) > 1 else "SIGTERM")
    _for_id(c, cid).kill(c.root, cid, sig, f.b("all"))
    return 0


DELETE_FLAGS: flags.Spec = {"force": "bool"}


def _delete(c: Ctx, f: flags.Parsed) -> int:
    if not f.args:
        raise CoveError("delete", "container id cannot be empty")
    for cid in f.args:  # each by its own handler
        _for_id(c, cid).delete(c.root, cid, f.b("force"))
    return 0


LIST_FLAGS: flags.Spec = {"format": "str", "quiet": "bool"}


def _list(c: Ctx, f: flags.Parsed) -> int:
    """Every handler's containers: they share the state directory's format."""
    from cove.runtime.list import render

    sys.stdout.write(render(c.root, f.s("format", "table"), f.b("quiet")))
    return 0


PS_FLAGS: flags.Spec = {"format": "str"}


def _ps(c: Ctx, f: flags.Parsed) -> int:
    cid = _one(f.args, "ps", extra_ok=True)
    sys.stdout.write(_for_id(c, cid).ps(c.root, cid, f.s("format", "table"), f.args[1:]))
    return 0


EXEC_FLAGS: flags.Spec = {
    "process": "str", "tty": "bool", "detach": "bool", "pid-file": "str",
    "console-socket": "str", "env": "list", "cwd": "str", "user": "str", "cap": "list",
    "no-new-privs": "bool", "preserve-fds": "int", "additional-gids": "list",
    "apparmor": "str", "process-label": "str", "ignore-paused": "bool", "cgroup": "str",
    "pidfd-socket": "str"}


def _exec(c: Ctx, f: flags.Parsed) -> int:
    from cove.runtime import ExecOptions

    cid = _one(f.args, "exec", extra_ok=True)
    o = ExecOptions(c.root, cid)
    o.process_file = f.s("process")
    o.args = f.args[1:]
    o.tty = f.b("tty")
    o.detach = f.b("detach")
    o.pid_file = f.s("pid-file")
    o.console_socket = f.s("console-socket")
    o.env = f.lst("env")
    o.cwd = f.s("cwd")
    o.user = f.s("user")
    o.caps = f.lst("cap")
    o.no_new_privs = f.b("no-new-privs")
    o.preserve_fds = f.i("preserve-fds")
    try:
        o.additional_gids = [int(x) for x in f.lst("additional-gids")]
    except ValueError:
        raise CoveError("--additional-gids", "expected integers") from None
    if f.s("apparmor") or f.s("process-label"):
        raise CoveError("exec", "--apparmor/--process-label: no LSM is enabled on this host")
    if f.s("cgroup"):
        raise CoveError("exec --cgroup", "not supported yet")
    return _for_id(c, cid).exec_(o)


def _pause(c: Ctx, f: flags.Parsed) -> int:
    cid = _one(f.args, "pause")
    _for_id(c, cid).pause(c.root, cid)
    return 0


def _resume(c: Ctx, f: flags.Parsed) -> int:
    cid = _one(f.args, "resume")
    _for_id(c, cid).resume(c.root, cid)
    return 0


_UPDATE_VALUES = ("blkio-weight", "cpu-period", "cpu-quota", "cpu-rt-period",
                  "cpu-rt-runtime", "cpu-share", "cpuset-cpus", "cpuset-mems", "kernel-memory",
                  "kernel-memory-tcp", "memory", "memory-reservation", "memory-swap",
                  "pids-limit", "l3-cache-schema", "mem-bw-schema")
UPDATE_FLAGS: flags.Spec = {"resources": "str", **{k: "str" for k in _UPDATE_VALUES}}


def _update(c: Ctx, f: flags.Parsed) -> int:
    from cove.runtime.update import FLAGS, resources_from

    cid = _one(f.args, "update")
    h = _for_id(c, cid)
    for k in ("l3-cache-schema", "mem-bw-schema"):
        if f.given(k):
            raise CoveError(f"--{k}", "Intel RDT is not supported on this host")
    given = {k: f.s(k) for k in FLAGS if f.given(k)}
    h.update(c.root, cid, resources_from(f.s("resources"), given))
    return 0


EVENTS_FLAGS: flags.Spec = {"stats": "bool", "interval": "str"}


def _events(c: Ctx, f: flags.Parsed) -> int:
    cid = _one(f.args, "events")
    h = _for_id(c, cid)
    interval = f.s("interval", "5s")
    try:
        secs = float(interval[:-1]) if interval.endswith("s") else float(interval)
    except ValueError:
        raise CoveError(f"--interval {interval}", "expected a duration such as 5s") from None
    h.events(c.root, cid, f.b("stats"), secs)
    return 0


SPEC_FLAGS: flags.Spec = {"bundle": "str", "rootless": "bool"}


def _spec(c: Ctx, f: flags.Parsed) -> int:
    """Not a handler's: the default config.json is OCI data (cove.oci.defaults)."""
    from cove.runtime.spec import write_spec

    write_spec(f.s("bundle"), f.b("rootless"))
    return 0


def _features(c: Ctx, f: flags.Parsed) -> int:
    from cove.oci import jsonio

    features = _load(c.forced or "container").features()
    sys.stdout.write(jsonio.dumps(features, indent=4) + "\n")
    return 0


CHECKPOINT_FLAGS: flags.Spec = {
    "image-path": "str", "work-path": "str", "parent-path": "str", "leave-running": "bool",
    "tcp-established": "bool", "ext-unix-sk": "bool", "shell-job": "bool",
    "file-locks": "bool", "pre-dump": "bool", "manage-cgroups-mode": "str",
    "empty-ns": "list", "auto-dedup": "bool", "lazy-pages": "bool", "page-server": "str",
    "status-fd": "str", "lsm-profile": "str", "lsm-mount-context": "str"}
RESTORE_FLAGS: flags.Spec = {
    "image-path": "str", "work-path": "str", "bundle": "str", "detach": "bool",
    "pid-file": "str", "console-socket": "str", "no-pivot": "bool", "no-subreaper": "bool",
    "tcp-established": "bool", "ext-unix-sk": "bool", "shell-job": "bool",
    "file-locks": "bool", "manage-cgroups-mode": "str", "empty-ns": "list",
    "auto-dedup": "bool", "lazy-pages": "bool", "lsm-profile": "str",
    "lsm-mount-context": "str"}


def _checkpoint(c: Ctx, f: flags.Parsed) -> int:
    """CRIU through cove.cli.runtime_criu (imported only here: off every other path)."""
    from cove.cli.runtime_criu import checkpoint

    cid = _one(f.args, "checkpoint")
    return checkpoint(c.root, cid, _for_id(c, cid), f)


def _restore(c: Ctx, f: flags.Parsed) -> int:
    from cove.cli.runtime_criu import restore

    return restore(c.root, _one(f.args, "restore"), _for_bundle(c, f.s("bundle")), f,
                   c.rootless, c.systemd)


# verb -> (function, its flags, their one-letter aliases, help). One table: `dispatch`
# parses exactly these flags, and reading any other name from them is a bug
# (flags.Parsed raises).
VERBS: dict[str, tuple[Callable[[Ctx, flags.Parsed], int], flags.Spec, dict[str, str], str]] = {
    "create": (_create, CREATE_FLAGS, {"b": "bundle"},
               "create a container (init waits for start)"),
    "run": (_run, RUN_FLAGS, {"b": "bundle", "d": "detach"}, "create and start a container"),
    "start": (_start, {}, {}, "start a created container"),
    "state": (_state, {}, {}, "print the state of a container as JSON"),
    "kill": (_kill, KILL_FLAGS, {"a": "all"}, "send a signal (default SIGTERM) to the init"),
    "delete": (_delete, DELETE_FLAGS, {"f": "force"}, "delete a container"),
    "list": (_list, LIST_FLAGS, {"f": "format", "q": "quiet"}, "list containers"),
    "ps": (_ps, PS_FLAGS, {"f": "format"}, "list the processes of a container"),
    "exec": (_exec, EXEC_FLAGS, {"p": "process", "t": "tty", "d": "detach", "e": "env",
                                 "u": "user", "c": "cap", "g": "additional-gids"},
             "run a process in a container"),
    "pause": (_pause, {}, {}, "freeze every process of a container"),
    "resume": (_resume, {}, {}, "thaw a paused container"),
    "update": (_update, UPDATE_FLAGS, {"r": "resources"}, "update resource limits"),
    "events": (_events, EVENTS_FLAGS, {}, "stats and OOM events"),
    "spec": (_spec, SPEC_FLAGS, {"b": "bundle"}, "write a default config.json"),
    "features": (_features, {}, {}, "print the features this runtime implements"),
    "checkpoint": (_checkpoint, CHECKPOINT_FLAGS, {}, "write a running container out (CRIU)"),
    "restore": (_restore, RESTORE_FLAGS, {"b": "bundle", "d": "detach"},
                "restore a container from a checkpoint (CRIU)"),
}


def main(argv: list[str] | None = None, handler: str = "") -> int:
    log = Log("", "text", False)
    args = sys.argv[1:] if argv is None else argv
    try:
        code = dispatch(args, log, handler)
        sys.stdout.flush()
        return code
    except CoveError as e:
        msg = str(e)
        code = e.code
    except OSError as e:
        msg = os_why(e)
        code = 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    log.write("error", msg)
    posix.write(2, f"cove-runtime: {msg}\n".encode(errors="replace"))
    return code


if __name__ == "__main__":
    sys.exit(main())
