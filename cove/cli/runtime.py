"""`cove-runtime`: runc's command line over cove.runtime.

Thin by rule: parse flags, call one library function, print. Errors become one line,
`cove-runtime: <what>: <why>`, on stderr and (as JSON or text) in --log.
"""

from __future__ import annotations

import os
import sys
import time

from cove.cli import flags as F
from cove.errors import CoveError, os_why

GLOBAL: F.Spec = {"root": "str", "log": "str", "log-format": "str", "debug": "bool",
                  "systemd-cgroup": "bool", "rootless": "str", "criu": "str",
                  "version": "bool", "help": "bool"}
GLOBAL_ALIASES = {"v": "version", "h": "help"}

COMMANDS: dict[str, tuple[F.Spec, dict[str, str], str]] = {
    "create": ({"bundle": "str", "pid-file": "str", "console-socket": "str",
                "preserve-fds": "int", "no-pivot": "bool", "no-new-keyring": "bool",
                "pidfd-socket": "str"}, {"b": "bundle"},
               "create a container (init waits for start)"),
    "run": ({"bundle": "str", "pid-file": "str", "console-socket": "str",
             "preserve-fds": "int", "no-pivot": "bool", "no-new-keyring": "bool",
             "detach": "bool", "keep": "bool", "no-subreaper": "bool"},
            {"b": "bundle", "d": "detach"}, "create and start a container"),
    "start": ({}, {}, "start a created container"),
    "state": ({}, {}, "print the state of a container as JSON"),
    "kill": ({"all": "bool"}, {"a": "all"}, "send a signal (default SIGTERM) to the init"),
    "delete": ({"force": "bool"}, {"f": "force"}, "delete a container"),
    "list": ({"format": "str", "quiet": "bool"}, {"f": "format", "q": "quiet"},
             "list containers"),
    "ps": ({"format": "str"}, {"f": "format"}, "list the processes of a container"),
    "exec": ({"process": "str", "tty": "bool", "detach": "bool", "pid-file": "str",
              "console-socket": "str", "env": "list", "cwd": "str", "user": "str",
              "cap": "list", "no-new-privs": "bool", "preserve-fds": "int",
              "additional-gids": "list", "apparmor": "str", "process-label": "str",
              "ignore-paused": "bool", "cgroup": "str", "pidfd-socket": "str"},
             {"p": "process", "t": "tty", "d": "detach", "e": "env", "u": "user",
              "c": "cap", "g": "additional-gids"}, "run a process in a container"),
    "pause": ({}, {}, "freeze every process of a container"),
    "resume": ({}, {}, "thaw a paused container"),
    "update": ({"resources": "str", **{k: "str" for k in (
        "blkio-weight", "cpu-period", "cpu-quota", "cpu-rt-period", "cpu-rt-runtime",
        "cpu-share", "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp",
        "memory", "memory-reservation", "memory-swap", "pids-limit", "l3-cache-schema",
        "mem-bw-schema")}}, {"r": "resources"}, "update resource limits"),
    "events": ({"stats": "bool", "interval": "str"}, {}, "stats and OOM events"),
    "spec": ({"bundle": "str", "rootless": "bool"}, {"b": "bundle"},
             "write a default config.json"),
    "features": ({}, {}, "print the features this runtime implements"),
}


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
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass


def _usage() -> str:
    lines = ["usage: cove-runtime [global flags] COMMAND [flags] [args]", "",
             "An OCI runtime, command-line compatible with runc.", "", "Commands:"]
    lines += [f"  {n:<10}{c[2]}" for n, c in COMMANDS.items()]
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
    from cove.runtime.features import libseccomp_version
    from cove.runtime.state import OCI_VERSION

    commit = "unknown"
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(here, "..", "_commit")) as f:
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
        return os.geteuid() != 0
    if mode in ("true", "false"):
        return mode == "true"
    raise CoveError(f"--rootless {mode}", "expected auto, true or false")


def dispatch(argv: list[str], log: Log, handler: str = "") -> int:
    g = F.parse(argv, GLOBAL, GLOBAL_ALIASES)
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
    if cmd not in COMMANDS:
        raise CoveError(f"command {cmd!r}", "no such command (see cove-runtime --help)")
    fspec, aliases, _ = COMMANDS[cmd]
    f = F.parse(rest, {**fspec, "help": "bool"}, {**aliases, "h": "help"}, f"{cmd}: ")
    if f.b("help"):
        sys.stdout.write(f"usage: cove-runtime {cmd} [flags] ...\n  {COMMANDS[cmd][2]}\nflags: "
                         + " ".join(f"--{k}" for k in fspec) + "\n")
        return 0
    root = g.s("root")
    if not root and cmd not in ("spec", "features"):
        from cove.runtime.state import default_root

        root = default_root()
    if g.b("systemd-cgroup") and not os.path.isdir("/run/systemd/system"):
        raise CoveError("--systemd-cgroup", "systemd is not running on this host")
    rootless = _rootless(g.s("rootless"))
    if log.debug_on:
        log.write("debug", f"{cmd} {' '.join(rest)} (root {root}, rootless {rootless})")
    code = _run_command(cmd, f, root, rootless, g.b("systemd-cgroup"), handler)
    if log.debug_on:
        log.write("debug", f"{cmd}: exit status {code}")
    return code


def _handler(cmd: str, f: F.Parsed, root: str, forced: str) -> str:
    """The isolation handler, cheaply: no JSON parsing unless the config or state names one.

    create/run: the entry point's (cove-runtime-vm, -gvisor) or the bundle's annotation
    io.cove.isolation; later verbs: the one recorded in the container's state.
    """
    if cmd in ("create", "run"):
        try:
            with open(os.path.join(f.s("bundle") or ".", "config.json"), "rb") as fh:
                raw = fh.read()
        except OSError:
            return forced or "container"  # create reports the missing config
        if b"io.cove.isolation" not in raw and not forced:
            return "container"
        from cove.cli.isolation import from_config

        return from_config(raw, forced)
    cid = f.args[0] if f.args else ""
    if not cid or "/" in cid or cid in (".", ".."):
        return "container"
    try:
        with open(os.path.join(root, cid, "state.json"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return "container"
    if b'"handler"' not in raw:
        return "container"
    from cove.cli.isolation import from_state

    return from_state(raw)


def _run_command(cmd: str, f: F.Parsed, root: str, rootless: bool, systemd: bool,
                 handler: str = "") -> int:
    out = sys.stdout
    if cmd not in ("spec", "features", "list"):
        h = _handler(cmd, f, root, handler)
        if h != "container":
            from cove.cli.isolation import run_command

            return run_command(h, cmd, f, root)
    if cmd in ("create", "run"):
        from cove.runtime.cgroups.prewarm import prewarm

        warm = prewarm()  # first: it overlaps the imports and parsing below
        from cove.runtime.create import CreateOptions

        opts = CreateOptions(root, _one(f.args, cmd), f.s("bundle"), f.s("pid-file"),
                             f.s("console-socket"), f.i("preserve-fds"), f.b("no-pivot"),
                             rootless, systemd)
        opts.warm = warm
        if cmd == "create":
            from cove.runtime.create import create

            create(opts)
            return 0
        from cove.runtime.run import run

        return run(opts, f.b("detach"))
    if cmd == "start":
        from cove.runtime.start import start

        start(root, _one(f.args, cmd))
        return 0
    if cmd == "state":
        from cove.oci import jsonio
        from cove.runtime import state as S

        out.write(jsonio.dumps(S.load(root, _one(f.args, cmd)).oci(), indent=2) + "\n")
        return 0
    if cmd == "kill":
        from cove.runtime.kill import kill
        from cove.runtime.signals import parse_signal

        cid = _one(f.args, cmd, extra_ok=True)
        if len(f.args) > 2:
            raise CoveError("kill", "usage: kill [--all] ID [SIGNAL]")
        kill(root, cid, parse_signal(f.args[1] if len(f.args) > 1 else "SIGTERM"), f.b("all"))
        return 0
    if cmd == "delete":
        from cove.runtime.delete import delete

        if not f.args:
            raise CoveError(cmd, "container id cannot be empty")
        for cid in f.args:
            delete(root, cid, f.b("force"))
        return 0
    if cmd == "list":
        from cove.runtime.list import render

        out.write(render(root, f.s("format", "table"), f.b("quiet")))
        return 0
    if cmd == "ps":
        from cove.runtime.ps import render as ps_render

        cid = _one(f.args, cmd, extra_ok=True)
        out.write(ps_render(root, cid, f.s("format", "table"), f.args[1:]))
        return 0
    if cmd == "exec":
        return _exec(f, root)
    if cmd in ("pause", "resume"):
        from cove.runtime import pause as PZ

        (PZ.pause if cmd == "pause" else PZ.resume)(root, _one(f.args, cmd))
        return 0
    if cmd == "update":
        from cove.runtime.update import FLAGS, resources_from, update

        given = {k: f.s(k) for k in FLAGS if k in f.values}
        for k in ("l3-cache-schema", "mem-bw-schema"):
            if k in f.values:
                raise CoveError(f"--{k}", "Intel RDT is not supported on this host")
        update(root, _one(f.args, cmd), resources_from(f.s("resources"), given))
        return 0
    if cmd == "events":
        from cove.runtime.events import events

        interval = f.s("interval", "5s")
        secs = float(interval[:-1]) if interval.endswith("s") else float(interval)
        events(root, _one(f.args, cmd), f.b("stats"), secs)
        return 0
    if cmd == "spec":
        from cove.runtime.spec import write_spec

        write_spec(f.s("bundle"), f.b("rootless"))
        return 0
    if cmd == "features":
        from cove.oci import jsonio
        from cove.runtime.features import features

        out.write(jsonio.dumps(features(), indent=4) + "\n")
        return 0
    raise CoveError(f"command {cmd!r}", "not implemented")


def _exec(f: F.Parsed, root: str) -> int:
    from cove.runtime.exec import ExecOptions, exec_process

    cid = _one(f.args, "exec", extra_ok=True)
    o = ExecOptions(root, cid)
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
    return exec_process(o)


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
    os.write(2, f"cove-runtime: {msg}\n".encode(errors="replace"))
    return code


if __name__ == "__main__":
    sys.exit(main())
