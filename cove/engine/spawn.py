"""How the engine starts its own Python processes (supervisor, zygote, monitors).

They run `python -I -S`: isolated (no PYTHONPATH, no user site, no cwd on the path) and
without `site`, which saves ~20 ms and a few hundred KiB per process and keeps a
container's environment from steering them. The cost is that such a process finds only
the standard library: neither Cove's own source tree nor the third-party libraries the
engine uses (pyroute2 for bridge networks, zstandard for layers) are on its path. That
once made every restart on the default network fail with "No module named 'pyroute2'"
while the tests, all on `--network none`, passed.

So the parent passes its own module search path on: whatever found Cove and its
libraries in the parent (the fast launcher, a pip entry point through `site`, `python -m`
from a checkout, a venv or a system install) finds them in the child. The path travels
as the first argument, separated by os.pathsep as in PYTHONPATH, and the child's first
statement puts it in front of its own.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

# The `-c` program: the module search path from argv[1], then MODULE.main(argv[2:]).
_BOOT = ("import sys; sys.path[0:0] = [p for p in sys.argv.pop(1).split(':') "
         "if p not in sys.path]; from {pkg}.{module} import main; "
         "sys.exit(main(sys.argv[1:]))")


def _src() -> str:
    """The directory that holds the `cove` package itself."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def search_path() -> list[str]:
    """Cove's own directory, then every directory on this process's module search path
    (absolute, existing, without os.pathsep in the name). The standard library's own
    entries are harmless repeats."""
    out = [_src()]
    for p in sys.path:
        if p and os.path.isabs(p) and os.pathsep not in p and p not in out \
                and os.path.isdir(p):
            out.append(p)
    return out


def argv(module: str, *args: str, pkg: str = "cove.engine") -> list[str]:
    """The command line that runs `<pkg>.<module>.main(args)` (cove.engine's by
    default) in a new `python -I -S` with this process's module search path."""
    return [sys.executable, "-I", "-S", "-c", _BOOT.format(pkg=pkg, module=module),
            os.pathsep.join(search_path()), *args]


def runtime_binary() -> str:
    """The cove-runtime the engine drives: $COVE_RUNTIME, else the one beside this
    interpreter (a venv's), else the first on PATH."""
    env = os.environ.get("COVE_RUNTIME")
    if env:
        return env
    cand = os.path.join(os.path.dirname(sys.executable), "cove-runtime")
    return cand if os.path.exists(cand) else "cove-runtime"


def keeper_sibling(root: str, env: dict[str, str]) -> tuple[socket.socket, int]:
    """From a monitor whose keeper died: a new keeper (`--sibling`, with a pidfd on the
    caller) and the caller's end of their socket pair; its pid."""
    import socket

    from cove.engine import procs

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    log = os.open(os.path.join(root, "zygote.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid = procs.spawn(argv("zygote", root, "-1", "--sibling",
                               str(theirs.fileno()), str(os.getpid())),
                          null, log, log, env)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
        os.close(log)
        os.close(null)
    return ours, pid
