"""`cove`: the user-facing command. Thin argparse front-ends: images (pull, push, images,
rmi, tag, inspect, image prune, save, load, import), login/logout, containers
(run, ps, logs, exec, start, stop, ...), volumes, networks, the supervisor."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cove.errors import CoveError


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


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from cove.cli import images, login, run
    p = argparse.ArgumentParser(prog="cove", description="Cove: images and containers.")
    p.add_argument("--root", help="state directory (default /var/lib/cove for root, "
                                  "$XDG_DATA_HOME/cove otherwise)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    want = _command(argv) if argv is not None else None
    target: Any = _Only(sub, want) if want else sub
    run.register(target)
    images.register(target)
    login.register(target)
    if want and want not in sub.choices:
        return parser(None)  # unknown command: the full parser says so, with the list
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    a = parser(argv).parse_args(argv)
    try:
        return int(a.func(a))
    except CoveError as e:
        print(f"cove: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # what no layer turned into a CoveError: still one line
        from cove.errors import os_why
        print(f"cove: {a.cmd}: {os_why(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
