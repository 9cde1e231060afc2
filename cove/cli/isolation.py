"""The CLI side of the isolation handlers: which one a container uses, and each verb
routed to it. Imported only when a config or a state names a handler (or an entry point
forces one), so the default `container` path never loads cove.vm.
"""

from __future__ import annotations

import sys

from cove.cli import flags as F
from cove.errors import CoveError

HANDLERS = ("container", "gvisor", "vm")
ANNOTATION = "io.cove.isolation"


def from_config(raw: bytes, forced: str) -> str:
    """The handler for a new container: the entry point's, or the annotation's."""
    from cove.oci import jsonio

    try:
        cfg = jsonio.loads(raw)
    except jsonio.JSONError:
        return forced or "container"  # create reports the JSON error
    ann = (cfg.get("annotations") or {}).get(ANNOTATION) if isinstance(cfg, dict) else None
    if ann is not None and ann not in HANDLERS:
        raise CoveError(f"annotation {ANNOTATION}={ann}",
                        "unknown handler (expected container, gvisor or vm)")
    if forced and ann and ann != forced:
        # A RuntimeClass picks the binary: a pod's annotation must not weaken it.
        raise CoveError(f"annotation {ANNOTATION}={ann}",
                        f"conflicts with cove-runtime-{forced}, which runs only {forced}")
    return str(forced or ann or "container")


def from_state(raw: bytes) -> str:
    from cove.oci import jsonio

    try:
        h = jsonio.loads(raw).get("handler") or "container"
    except (jsonio.JSONError, AttributeError):
        return "container"
    return str(h)


def _one(f: F.Parsed, cmd: str) -> str:
    if not f.args:
        raise CoveError(cmd, "container id cannot be empty")
    return f.args[0]


def _cant(handler: str, cmd: str, why: str = "") -> CoveError:
    return CoveError(f"{cmd}", f"the {handler} handler cannot {why or cmd} containers")


def run_command(handler: str, cmd: str, f: F.Parsed, root: str) -> int:
    if handler == "vm":
        return _vm(cmd, f, root)
    if handler == "gvisor":
        return _gvisor(cmd, f, root)
    raise CoveError(f"handler {handler!r}", "unknown (expected container, gvisor or vm)")


def _signal(f: F.Parsed) -> int:
    from cove.runtime.signals import parse_signal

    if len(f.args) > 2:
        raise CoveError("kill", "usage: kill [--all] ID [SIGNAL]")
    return parse_signal(f.args[1] if len(f.args) > 1 else "SIGTERM")


def _vm(cmd: str, f: F.Parsed, root: str) -> int:
    from cove.oci import jsonio
    from cove.vm import handler as V

    out = sys.stdout
    if cmd in ("create", "run") and f.i("preserve-fds"):
        raise _cant("vm", f"{cmd} --preserve-fds", "pass extra file descriptors into")
    if cmd == "create":
        V.create(root, _one(f, cmd), f.s("bundle"), f.s("pid-file"), f.s("console-socket"))
        return 0
    if cmd == "run":
        return V.run(root, _one(f, cmd), f.s("bundle"), f.s("pid-file"), f.b("detach"),
                     f.s("console-socket"))
    if cmd == "start":
        from cove.runtime.start import start

        start(root, _one(f, cmd))
        return 0
    if cmd == "state":
        out.write(jsonio.dumps(V.state(root, _one(f, cmd)), indent=2) + "\n")
        return 0
    if cmd == "kill":
        # The monitor (the state's pid) forwards catchable signals to the guest; SIGKILL
        # kills it, and qemu with it.
        V.kill(root, _one(f, cmd), _signal(f))
        return 0
    if cmd == "delete":
        for cid in f.args or [_one(f, cmd)]:
            V.delete(root, cid, f.b("force"))
        return 0
    if cmd == "ps":
        out.write(V.ps(root, _one(f, cmd), f.s("format", "table")))
        return 0
    if cmd == "exec":
        cid = _one(f, cmd)
        proc = V.process_from(root, cid, f.s("process"), f.args[1:], f.lst("env"),
                              f.s("cwd"), f.s("user"), f.b("tty"))
        return V.exec_process(root, cid, proc, f.b("detach"), f.s("pid-file"),
                              f.s("console-socket"))
    if cmd == "pause":
        V.pause(root, _one(f, cmd))
        return 0
    if cmd == "resume":
        V.resume(root, _one(f, cmd))
        return 0
    if cmd == "update":
        from cove.runtime.update import FLAGS, resources_from

        given = {k: f.s(k) for k in FLAGS if k in f.values}
        V.update(root, _one(f, cmd), resources_from(f.s("resources"), given))
        return 0
    if cmd == "events":
        raise _cant("vm", cmd, "report events or stats of")
    raise _cant("vm", cmd)


def _gvisor(cmd: str, f: F.Parsed, root: str) -> int:
    from cove.oci import jsonio
    from cove.vm import gvisor as G

    out = sys.stdout
    if cmd in ("create", "run") and f.i("preserve-fds"):
        raise _cant("gvisor", f"{cmd} --preserve-fds", "pass extra file descriptors into")
    if cmd == "create":
        G.create(root, _one(f, cmd), f.s("bundle"), f.s("pid-file"), f.s("console-socket"))
        return 0
    if cmd == "run":
        return G.run(root, _one(f, cmd), f.s("bundle"), f.s("pid-file"),
                     f.s("console-socket"), f.b("detach"))
    if cmd == "start":
        G.start(root, _one(f, cmd))
        return 0
    if cmd == "state":
        out.write(jsonio.dumps(G.state(root, _one(f, cmd)), indent=2) + "\n")
        return 0
    if cmd == "kill":
        G.kill(root, _one(f, cmd), _signal(f), f.b("all"))
        return 0
    if cmd == "delete":
        for cid in f.args or [_one(f, cmd)]:
            G.delete(root, cid, f.b("force"))
        return 0
    if cmd == "ps":
        out.write(G.ps(root, _one(f, cmd), f.s("format", "table")))
        return 0
    if cmd in ("pause", "resume"):
        G.pause(root, _one(f, cmd), cmd == "resume")
        return 0
    if cmd == "exec":
        argv: list[str] = []
        for k in ("process", "pid-file", "console-socket", "cwd", "user"):
            if f.s(k):
                argv += [f"--{k}", f.s(k)]
        for k in ("detach", "tty"):
            if f.b(k):
                argv.append(f"--{k}")
        for e in f.lst("env"):
            argv += ["--env", e]
        for c in f.lst("cap"):
            argv += ["--cap", c]
        return G.exec_(root, _one(f, cmd), [*argv, *f.args])
    if cmd == "update":
        raise _cant("gvisor", cmd, "update the resources of")
    if cmd == "events":
        raise _cant("gvisor", cmd, "report events or stats of")
    raise _cant("gvisor", cmd)
