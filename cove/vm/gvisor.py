"""The `gvisor` handler: the bundle run by gVisor's `runsc` (Debian's), Cove keeping the
lifecycle record, the state output and the CLI contract.

runsc keeps its own state under `<root>/runsc` (Cove's --root), so two Cove roots never
see each other's sandboxes; Cove's `<root>/<id>/state.json` records the handler, which
later verbs dispatch on. runsc runs with the ptrace platform (no KVM needed) and, unless
the annotation io.cove.gvisor.network says `sandbox` or `host`, without a network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as S

NET_ANNOTATION = "io.cove.gvisor.network"


def _runsc() -> str:
    path = os.environ.get("COVE_RUNSC") or shutil.which("runsc") or ""
    if not path or not os.access(path, os.X_OK):
        raise CoveError("gvisor handler", "runsc not installed (apt-get install runsc)")
    return path


def _base(root: str, net: str = "none") -> list[str]:
    return [_runsc(), "--root", os.path.join(root, "runsc"), "--platform=ptrace",
            f"--network={net}"]


def _recorded_net(root: str, cid: str) -> str:
    """The --network create used: runsc wants the same flag on every later verb."""
    try:
        with open(os.path.join(root, cid, "state.json"), "rb") as f:
            return str(jsonio.loads(f.read()).get("network") or "none")
    except (OSError, ValueError, AttributeError):
        return "none"


def _call(root: str, args: list[str], what: str, net: str = "",
          capture: bool = True, cid: str = "") -> str:
    net = net or (_recorded_net(root, cid) if cid else "none")
    r = subprocess.run(_base(root, net) + args, stdin=subprocess.DEVNULL if capture else None,
                       capture_output=capture, text=True)
    if r.returncode != 0:
        err = (r.stderr or "").strip().splitlines() if capture else []
        raise CoveError(what, f"runsc: {err[-1] if err else f'exit status {r.returncode}'}")
    return r.stdout or ""


def _network(raw: dict[str, Any]) -> str:
    net = (raw.get("annotations") or {}).get(NET_ANNOTATION, "none")
    if net not in ("none", "sandbox", "host"):
        raise CoveError(f"annotation {NET_ANNOTATION}={net}", "expected none, sandbox or host")
    return str(net)


def _record(root: str, cid: str, bundle: str, raw: dict[str, Any], net: str) -> S.State:
    sdir = os.path.join(root, cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(sdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {cid!r}", "already exists") from None
    st = S.State(root, cid, {
        "id": cid, "bundle": bundle, "created": S.rfc3339(time.time_ns()),
        "owner": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "annotations": raw.get("annotations") or {}, "handler": "gvisor", "network": net,
        "rootfs": os.path.join(bundle, (raw.get("root") or {}).get("path", "rootfs"))})
    st.save()
    return st


def create(root: str, cid: str, bundle: str, pid_file: str, console_socket: str,
           run_detached: bool = False) -> None:
    from cove.runtime.create import load_bundle

    S.check_id(cid)
    _runsc()
    bundle, raw_b, _spec, _rootfs = load_bundle(bundle)
    raw = jsonio.loads(raw_b)
    net = _network(raw)
    st = _record(root, cid, bundle, raw, net)
    args = ["run", "--detach"] if run_detached else ["create"]
    args += ["--bundle", bundle]
    if pid_file:
        args += ["--pid-file", os.path.abspath(pid_file)]
    if console_socket:
        args += ["--console-socket", os.path.abspath(console_socket)]
    try:
        # runsc's sandbox inherits our stdio (the container's), as runc's init does.
        # Its errors go to a file: a pipe would stay open in the sandbox.
        import tempfile

        with tempfile.TemporaryFile("w+") as ef:
            r = subprocess.run([*_base(root, net), *args, cid], stderr=ef)
            ef.seek(0)
            err = ef.read().strip().splitlines()
        if r.returncode != 0:
            raise CoveError("gvisor", f"runsc: {err[-1] if err else r.returncode}")
        st.data["pid"] = _runsc_state(root, cid).get("pid", 0)
        st.data["init_start"] = S.proc_start_time(st.data["pid"])
        st.save()
    except BaseException:
        subprocess.run([*_base(root, net), "delete", "--force", cid], capture_output=True)
        S.remove_dir(st.dir)
        raise


def run(root: str, cid: str, bundle: str, pid_file: str, console_socket: str,
        detach: bool) -> int:
    if detach:
        create(root, cid, bundle, pid_file, console_socket, run_detached=True)
        return 0
    from cove.runtime.create import load_bundle

    S.check_id(cid)
    _runsc()
    bundle, raw_b, _spec, _rootfs = load_bundle(bundle)
    raw = jsonio.loads(raw_b)
    net = _network(raw)
    _record(root, cid, bundle, raw, net)
    args = ["run", "--bundle", bundle]
    if pid_file:
        args += ["--pid-file", os.path.abspath(pid_file)]
    try:
        return subprocess.run([*_base(root, net), *args, cid]).returncode
    finally:
        delete(root, cid, True)


def _runsc_state(root: str, cid: str) -> dict[str, Any]:
    try:
        out = _call(root, ["state", cid], f"container {cid!r}", cid=cid)
    except CoveError:
        return {}
    return json.loads(out)


def state(root: str, cid: str) -> dict[str, Any]:
    st = S.load(root, cid)
    rs = _runsc_state(root, cid)
    status = rs.get("status", "stopped")
    return {"ociVersion": S.OCI_VERSION, "id": cid,
            "pid": rs.get("pid", 0) if status != "stopped" else 0, "status": status,
            "bundle": st.bundle, "rootfs": st.data.get("rootfs", ""),
            "created": st.data.get("created", ""), "owner": st.data.get("owner", ""),
            **({"annotations": st.data["annotations"]} if st.data.get("annotations") else {})}


def start(root: str, cid: str) -> None:
    S.load(root, cid)
    _call(root, ["start", cid], f"container {cid!r}", cid=cid)


def kill(root: str, cid: str, sig: int, all_: bool) -> None:
    S.load(root, cid)
    if state(root, cid)["status"] == "stopped":
        raise CoveError(f"container {cid!r}", "container not running")
    _call(root, ["kill", *(["--all"] if all_ else []), cid, str(sig)],
          f"container {cid!r}", cid=cid)


def delete(root: str, cid: str, force: bool) -> None:
    st = S.load(root, cid)
    status = state(root, cid)["status"]
    if status in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {status}")
    if _runsc_state(root, cid):
        _call(root, ["delete", "--force", cid], f"container {cid!r}", cid=cid)
    S.remove_dir(st.dir)
    try:
        os.rmdir(os.path.join(root, "runsc"))  # when it was the last sandbox
    except OSError:
        pass


def pause(root: str, cid: str, resume: bool = False) -> None:
    S.load(root, cid)
    _call(root, ["resume" if resume else "pause", cid], f"container {cid!r}",
          cid=cid)


def ps(root: str, cid: str, fmt: str) -> str:
    S.load(root, cid)
    if fmt not in ("json", "table"):
        raise CoveError(f"--format {fmt}", "expected table or json")
    return _call(root, ["ps", "--format", fmt, cid], f"container {cid!r}", cid=cid)


def exec_(root: str, cid: str, argv: list[str]) -> int:
    """runsc exec with runc's flags (already in runsc's spelling) and our stdio."""
    S.load(root, cid)
    return subprocess.run([*_base(root, _recorded_net(root, cid)), "exec", *argv]).returncode
