"""`cove`: the user-facing command. Thin argparse front-ends: images (pull, push, images,
rmi, tag, inspect, image prune, save, load, import), login/logout, containers
(run, ps, logs, exec, start, stop, ...), volumes, networks, the supervisor."""

from __future__ import annotations

import argparse
import sys

from cove.errors import CoveError


def parser() -> argparse.ArgumentParser:
    from cove.cli import images, login, run
    p = argparse.ArgumentParser(prog="cove", description="Cove: images and containers.")
    p.add_argument("--root", help="state directory (default /var/lib/cove for root, "
                                  "$XDG_DATA_HOME/cove otherwise)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    run.register(sub)
    images.register(sub)
    login.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
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
