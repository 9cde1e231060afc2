"""Container operations beyond the life cycle: create, pause/unpause, rename, update,
cp, attach, export, commit, diff, history and stats (thin argparse front-ends over
cove/engine: ops.py, attach.py, copy.py, commit.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from cove.cli.common import each, parse_bool, registry_flags, registry_options
from cove.errors import CoveError


def _root(a: argparse.Namespace) -> str:
    from cove.image.store import Store
    return Store(a.root, create=False).root


# -- create / start -a ------------------------------------------------------------------

def cmd_create(a: argparse.Namespace) -> int:
    """docker create: the container made (status created), its id printed."""
    from cove.cli.runflags import run_options
    from cove.engine import containers, images, state
    from cove.image.store import Store
    root = Store(a.root).root
    images.find_image(Store(root), a.image, lambda: registry_options(a), quiet=a.quiet,
                      pull=a.pull, platform=a.platform)
    o = run_options(a, set())
    o.detach = True  # --rm: removed when it exits, whoever starts it (AutoRemove)
    rec = containers.create(root, o)
    if a.interactive:  # docker's OpenStdin: `start -ai` and `attach` write to it
        state.update_record(state.Paths(root).cdir(rec["Name"]),
                 lambda r: r["Config"].update({"OpenStdin": True}))
    print(rec["Id"])  # (--cidfile: written by the engine's create, checked first)
    return 0


def start_attached(a: argparse.Namespace) -> int:
    """`start -a [-i] C`: start one container and follow it (attach's rules)."""
    from cove.engine import attach
    if len(a.containers) > 1:
        raise CoveError("start", "you cannot start and attach multiple containers at once")
    return attach.attach(_root(a), a.containers[0], stdin=0 if a.interactive else None,
                         detach_keys=a.detach_keys, start=True)


def cmd_attach(a: argparse.Namespace) -> int:
    from cove.engine import attach
    return attach.attach(_root(a), a.container, stdin=None if a.no_stdin else 0,
                         sig_proxy=a.sig_proxy, detach_keys=a.detach_keys)


# -- pause, unpause, rename, update -----------------------------------------------------

def cmd_pause(a: argparse.Namespace) -> int:
    from cove.engine import ops
    return each(a, lambda c: ops.pause(_root(a), c))


def cmd_unpause(a: argparse.Namespace) -> int:
    from cove.engine import ops
    return each(a, lambda c: ops.unpause(_root(a), c))


def cmd_rename(a: argparse.Namespace) -> int:
    from cove.engine import ops
    ops.rename(_root(a), a.old, a.new)
    return 0


def cmd_update(a: argparse.Namespace) -> int:
    from cove.engine import ops
    return each(a, lambda c: ops.update(
        _root(a), c, memory=a.memory, memory_swap=a.memory_swap, cpus=a.cpus,
        cpu_shares=a.cpu_shares, pids_limit=a.pids_limit, restart=a.restart))


# -- cp, export, commit, diff, history --------------------------------------------------

def cmd_cp(a: argparse.Namespace) -> int:
    from cove.engine import copy
    if a.dest == "-" and os.isatty(1):
        raise CoveError("cp", "cowardly refusing to write a tar archive to a terminal")
    copy.copy(_root(a), a.src, a.dest, archive=a.archive, follow=a.follow_link)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from cove.engine import copy
    if a.output:
        fd = os.open(a.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            copy.export(_root(a), a.container, fd)
        except BaseException:
            os.close(fd)
            os.unlink(a.output)
            raise
        os.close(fd)
        return 0
    if os.isatty(1):
        raise CoveError("export", "cowardly refusing to save to a terminal; use the -o "
                                  "flag or redirect")
    copy.export(_root(a), a.container)
    return 0


def cmd_commit(a: argparse.Namespace) -> int:
    from cove.engine import commit
    digest = commit.commit(_root(a), a.container, a.repository, message=a.message,
                           author=a.author, changes=a.change, pause=a.pause)
    print(digest)
    return 0


def cmd_diff(a: argparse.Namespace) -> int:
    from cove.engine import commit
    for kind, path in commit.diff(_root(a), a.container):
        print(f"{kind} {path}")
    return 0


HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"


def cmd_history(a: argparse.Namespace) -> int:
    """docker history: its columns (or --format), newest first."""
    from cove.cli.format import ago, ellipsis, human_size, render_list
    from cove.engine import commit, state
    rows = commit.history(_root(a), a.image)

    def ident(r: dict[str, Any]) -> str:
        return str(r["Id"]) if a.no_trunc or r["Id"] == "<missing>" \
            else r["Id"].partition(":")[2][:12]
    if a.quiet:
        for r in rows:
            print(ident(r))
        return 0
    items = []
    for r in rows:
        by = r["CreatedBy"].replace("\t", " ").replace("\n", " ")
        created = state.parse_rfc3339(r["Created"]) if r["Created"] else 0.0
        items.append({
            "Comment": r["Comment"],
            "CreatedAt": r["Created"] or "N/A",
            "CreatedBy": by if a.no_trunc else ellipsis(by, 45),
            "CreatedSince": (ago(created) if a.human else r["Created"]) if created
            else "N/A",
            "ID": ident(r),
            "Size": human_size(r["Size"], 3) if a.human else str(r["Size"])})
    render_list(a.format or "", items, HISTORY_TABLE, HISTORY_HEADERS)
    return 0


# -- stats ------------------------------------------------------------------------------

def bytes_size(n: float) -> str:
    """docker's units.BytesSize: binary units, four significant digits ("3.195MiB")."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
               "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")
def _sample(root: str, ref: str) -> dict[str, Any]:
    """A container's stats sample; a stopped one's is empty (docker shows zeros)."""
    from cove.engine import containers, state
    try:
        return {**containers.stats(root, ref), "t": time.monotonic(), "Ref": ref}
    except CoveError:
        paths = state.Paths(root)
        name = state.lookup(paths, ref)  # no such container: that error
        rec = containers.refresh_record(paths, name)
        return {"Name": name, "Id": rec["Id"], "Ref": ref, "t": time.monotonic()}


def _row(s: dict[str, Any], prev: dict[str, Any] | None, no_trunc: bool) -> dict[str, str]:
    """docker's fields of one sample (CPU % from the previous sample's CPU time)."""
    cpu = 0.0
    if prev is not None and "CPUNanos" in s and "CPUNanos" in prev and s["t"] > prev["t"]:
        cpu = max(0, s["CPUNanos"] - prev["CPUNanos"]) / ((s["t"] - prev["t"]) * 1e9) * 100
    from cove.cli.format import human_size
    used = max(0, int(s.get("MemUsage", 0)) - int(s.get("MemCache", 0)))
    limit = int(s.get("MemLimit", 0))

    def io(a: str, b: str) -> str:
        return f"{human_size(s.get(a, 0), 3)} / {human_size(s.get(b, 0), 3)}"
    # (keys in Go's order: `--format json` prints them sorted, as docker's map)
    return {"BlockIO": io("BlockRead", "BlockWrite"), "CPUPerc": f"{cpu:.2f}%",
            "Container": s["Ref"], "ID": s["Id"] if no_trunc else s["Id"][:12],
            "MemPerc": f"{used / limit * 100 if limit else 0:.2f}%",
            "MemUsage": f"{bytes_size(used)} / {bytes_size(limit)}",
            "Name": s["Name"], "NetIO": io("NetRx", "NetTx"), "PIDs": str(s.get("Pids", 0))}


def _print_stats(rows: list[dict[str, str]], fmt: str) -> None:
    from cove.cli.format import render_list
    render_list(fmt, rows, STATS_TABLE, STATS_HEADERS)


def stats_command(a: argparse.Namespace) -> int:
    """docker stats: every second (the screen cleared) until ^C, or once with
    --no-stream; the named containers, else the running ones (all with -a)."""
    from cove.engine import containers
    root = _root(a)

    def targets() -> list[str]:
        if a.containers:
            return list(a.containers)
        return [r["Name"] for r in containers.ps_records(root, all=a.all)]
    prev: dict[str, dict[str, Any]] = {}
    first = True
    def sample_all(names: list[str]) -> list[dict[str, Any]]:
        out = []
        for n in names:
            try:
                out.append(_sample(root, n))
            except CoveError:
                if a.containers:
                    raise
                # (one that `ps` listed and that is gone now: not shown, as docker)
        return out
    while True:
        names = targets()
        samples = sample_all(names)
        if first:  # CPU % needs two samples: docker's first is a second apart too
            prev = {s["Ref"]: s for s in samples}
            time.sleep(1.0)
            samples = sample_all(names)
            first = False
        rows = [_row(s, prev.get(s["Ref"]), a.no_trunc) for s in samples]
        prev = {s["Ref"]: s for s in samples}
        if not a.no_stream:
            sys.stdout.write("\033[2J\033[H")
        _print_stats(rows, a.format)
        sys.stdout.flush()
        if a.no_stream:
            return 0
        time.sleep(1.0)


# -- the parsers ------------------------------------------------------------------------

def register(sub: Any) -> None:
    """Add this module's commands to `cove`'s sub-parsers."""
    from cove.cli.runflags import add_run_flags
    p = sub.add_parser("create", help="create a container (started later by `start`)")
    add_run_flags(p)
    registry_flags(p)
    p.add_argument("image", help="the image (pulled when missing)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments (default: the image's)")
    p.set_defaults(func=cmd_create)

    def many(name: str, help: str, func: Any) -> Any:
        p = sub.add_parser(name, help=help)
        p.add_argument("containers", nargs="+", metavar="CONTAINER",
                       help="containers: names, IDs or ID prefixes")
        p.set_defaults(func=func)
        return p
    many("pause", "freeze every process of containers", cmd_pause)
    many("unpause", "thaw paused containers", cmd_unpause)

    p = sub.add_parser("rename", help="rename a container")
    p.add_argument("old", metavar="CONTAINER", help="the container to rename")
    p.add_argument("new", metavar="NEW_NAME", help="its new name")
    p.set_defaults(func=cmd_rename)

    p = many("update", "change containers' limits (live, and for later starts)", cmd_update)
    p.add_argument("-m", "--memory", help="memory limit (e.g. 64m; 6m at least)")
    p.add_argument("--memory-swap", help="memory + swap limit (-1: unlimited swap)")
    p.add_argument("--cpus", type=float, help="CPU quota in CPUs (0: none)")
    p.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight (2-262144)")
    p.add_argument("--pids-limit", type=int, help="most processes (0 or -1: unlimited)")
    p.add_argument("--restart", help="no, on-failure[:N], always or unless-stopped")

    p = sub.add_parser("cp", help="copy files between a container and the host (or a tar)")
    p.add_argument("-a", "--archive", action="store_true",
                   help="keep the source's owners (uid/gid)")
    p.add_argument("-L", "--follow-link", action="store_true",
                   help="follow a symlink that SRC names")
    p.add_argument("src", metavar="SRC", help="CONTAINER:PATH, a host path, or - (a tar "
                                              "on stdin)")
    p.add_argument("dest", metavar="DEST", help="CONTAINER:PATH, a host path, or - (a tar "
                                                "on stdout)")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("attach", help="attach to a running container's output (and stdin)")
    p.add_argument("--no-stdin", action="store_true", help="do not forward stdin")
    p.add_argument("--sig-proxy", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="forward signals to the container (default true)")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                   help="the keys that detach (default ctrl-p,ctrl-q)")
    p.add_argument("container", metavar="CONTAINER", help="a running container")
    p.set_defaults(func=cmd_attach)

    _register_changes(sub)


def _register_changes(sub: Any) -> None:
    """export, commit, diff and history: a container's filesystem and its changes."""
    p = sub.add_parser("export", help="a container's filesystem as a tar")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument("container", metavar="CONTAINER", help="the container to export")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("commit", help="a new image from a container's changes")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-a", "--author", default="", help='author ("Name <email>")')
    p.add_argument("-c", "--change", action="append", default=[],
                   help="a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                        "STOPSIGNAL, USER, VOLUME, WORKDIR)")
    p.add_argument("-p", "--pause", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="pause the container meanwhile (default true)")
    p.add_argument("container", metavar="CONTAINER", help="the container to commit")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]",
                   help="the new image's name (default: none, a dangling image)")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("diff", help="a container's changes to its image (A, C, D)")
    p.add_argument("container", metavar="CONTAINER", help="the container")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("history", help="an image's history")
    p.add_argument("-H", "--human", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="sizes and dates for humans (default true)")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--format", default="",
                   help="table, json or a Go template ({{.ID}}, {{.CreatedBy}}, ...)")
    p.add_argument("image", metavar="IMAGE", help="the image (a name or an ID)")
    p.set_defaults(func=cmd_history)
