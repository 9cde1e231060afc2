"""`cove`: the user-facing command. Thin argparse front-ends: images (pull, push, images,
rmi, tag, inspect, image prune, save, load, import), login/logout, containers
(run, ps, logs, exec, start, stop, ...), volumes, networks, the supervisor."""

from __future__ import annotations

import sys

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse and typing cost ~18 ms: imported where used
    import argparse
    from typing import Any


class _Skip:
    """Stands for a sub-parser this run won't use: every call is accepted and ignored."""

    def __getattr__(self, _name: str) -> _Skip:
        return self

    def __call__(self, *_a: Any, **_k: Any) -> _Skip:
        return self


class _Only:
    """A subparsers action that builds only the command being run: argparse spends
    tens of ms building the ~40 sub-parsers of every command otherwise."""

    def __init__(self, sub: Any, want: str) -> None:
        self.sub, self.want = sub, want

    def add_parser(self, name: str, **kw: Any) -> Any:
        if name == self.want or self.want in kw.get("aliases", ()):
            return self.sub.add_parser(name, **kw)
        return _Skip()


def _command(argv: list[str]) -> str | None:
    """The command word in argv (after the global --root), or None (help, none)."""
    it = iter(argv)
    for arg in it:
        if arg == "--root":
            next(it, None)
        elif arg in ("-h", "--help"):
            return None
        elif not arg.startswith("-"):
            return arg
    return None


# Which module registers each command, so that a run imports only its own (importing
# them all, with what they import, cost `cove run` ~30 ms). tests/unit/test_cli_table.py
# checks this table against what each module registers.
MODULES = ("run", "manage", "images", "login", "ops", "system", "cdi", "build", "serve",
           "autoscale", "compose", "checkpoint", "migrate")
COMMANDS = {
    **dict.fromkeys(("run", "start", "stop", "restart", "kill", "rm", "wait", "ps", "logs",
                     "exec", "top", "stats", "port"), "run"),
    **dict.fromkeys(("volume", "network", "supervisor"), "manage"),
    **dict.fromkeys(("pull", "push", "images", "rmi", "tag", "inspect", "image", "save",
                     "load", "import"), "images"),
    **dict.fromkeys(("login", "logout"), "login"),
    **dict.fromkeys(("create", "pause", "unpause", "rename", "update", "cp", "attach",
                     "export", "commit", "diff", "history"), "ops"),
    **dict.fromkeys(("version", "info", "events", "system"), "system"),
    "cdi": "cdi", "build": "build", "serve": "serve",
    "autoscale": "autoscale",
    **dict.fromkeys(("checkpoint", "restore"), "checkpoint"),
    **dict.fromkeys(("migrate", "migrate-receive"), "migrate"),
    **dict.fromkeys(("up", "down", "scale", "rollout", "rollback", "compose"), "compose"),
}


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    import argparse
    import importlib
    p = argparse.ArgumentParser(prog="cove", description="Cove: images and containers.")
    p.add_argument("--root", help="state directory (default /var/lib/cove for root, "
                                  "$XDG_DATA_HOME/cove otherwise)")
    p.add_argument("-v", "--version", action="store_true",
                   help="print version information and quit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    want = _command(argv) if argv is not None else None
    target: Any = _Only(sub, want) if want else sub
    for mod in (COMMANDS[want],) if want in COMMANDS else MODULES:
        importlib.import_module(f"cove.cli.{mod}").register(target)
    if want and want not in sub.choices:
        return parser(None)  # unknown command: the full parser says so, with the list
    return p


# docker's groups for `cove --help`: these first, then every command that has
# subcommands (Management Commands), then the rest (Commands)
COMMON = ("run", "exec", "ps", "build", "pull", "push", "images", "login", "logout",
          "search", "version", "info")


def usage() -> str:
    """`cove --help`, laid out as docker's: commands in its groups, one line each."""
    import argparse
    full = parser(None)
    sub = next(x for x in full._actions if isinstance(x, argparse._SubParsersAction))
    helps = {ca.dest: ca.help or "" for ca in sub._choices_actions}
    managing = {n for n in helps if any(isinstance(x, argparse._SubParsersAction)
                                        for x in sub.choices[n]._actions)}
    width = max(11, *(len(n) for n in helps)) + 1
    groups = [("Common Commands", [n for n in COMMON if n in helps]),
              ("Management Commands", sorted(managing)),
              ("Commands", sorted(n for n in helps if n not in managing and n not in COMMON))]
    out = ["Usage:  cove [OPTIONS] COMMAND", "",
           "A container platform: docker's commands over Cove's own engine and OCI runtime", ""]
    for title, names in groups:
        if names:
            out += [f"{title}:", *(f"  {n:<{width}}{helps[n][:1].upper()}{helps[n][1:]}"
                                   for n in names), ""]
    out += ["Global Options:",
            "      --root string   State directory (default /var/lib/cove for root,",
            "                      $XDG_DATA_HOME/cove otherwise)",
            "  -h, --help          Print usage",
            "  -v, --version       Print version information and quit", "",
            "Run 'cove COMMAND --help' for more information on a command."]
    return "\n".join(out) + "\n"


def _global_flag(argv: list[str]) -> str | None:
    """"help" or "version" when one of those is asked for before any command, or when
    there is no command at all (docker prints its help then)."""
    it = iter(argv)
    for arg in it:
        if arg == "--root":
            next(it, None)
        elif arg in ("-h", "--help"):
            return "help"
        elif arg in ("-v", "--version"):
            return "version"
        elif not arg.startswith("--root="):
            return None  # a command, or a flag argparse will refuse
    return "help"


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    from cove.cli import runclient  # `cove run` in the root's warm server, when it can
    served = runclient.client(argv)
    if served is not None:
        return served
    flag = _global_flag(argv)
    if flag == "help":
        sys.stdout.write(usage())
        return 0
    if flag == "version":
        from cove.cli.system import version_line
        print(version_line())
        return 0
    if _command(argv) == "help":  # `cove help [COMMAND]`
        rest = argv[argv.index("help") + 1:]
        if not rest:
            sys.stdout.write(usage())
            return 0
        argv = [rest[0], "--help"]
    a = parser(argv).parse_args(argv)
    try:
        return int(a.func(a))
    except CoveError as e:
        print(f"cove: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # stdout's reader left (`cove logs C | head -1`): nothing to say, and nobody to
        # say it to. Point stdout at /dev/null so the interpreter's final flush does
        # not fail again, and exit as a program killed by SIGPIPE would (128 + 13).
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except OSError as e:  # what no layer turned into a CoveError: still one line
        from cove.errors import os_why
        print(f"cove: {a.cmd}: {os_why(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
