"""A container's persisted state: `<root>/<id>/state.json`, written atomically.

The status is derived, never stored: the init pid (checked against its start time,
so a recycled pid is not mistaken for the container), the exec fifo (present until
`start`) and the freezer tell created / running / paused / stopped.
"""

from __future__ import annotations

import posix
import time

from cove.errors import CoveError
from cove.oci import OCI_VERSION, jsonio
from cove.runtime import lite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/cove-runtime"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def default_root() -> str:
    """The state root when --root is not given: /run/cove-runtime for root; for anyone
    else $XDG_RUNTIME_DIR/cove-runtime (runc: $XDG_RUNTIME_DIR/runc), or, when that is
    unset or not writable, /tmp/cove-runtime-<uid>, which must then be a directory of
    ours that nobody else can write (not a symlink or a directory planted in /tmp)."""
    euid = posix.geteuid()
    if euid == 0:
        return DEFAULT_ROOT
    xdg = lite.getenv("XDG_RUNTIME_DIR")
    if xdg.startswith("/") and posix.access(xdg, posix.W_OK | posix.X_OK):
        return lite.join(xdg, "cove-runtime")
    path = f"/tmp/cove-runtime-{euid}"
    try:
        posix.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise CoveError(f"state root {path}", e.strerror or str(e)) from None
    st = posix.lstat(path)
    if st.st_mode & 0o170000 != 0o040000 or st.st_uid != euid or st.st_mode & 0o022:  # S_ISDIR
        raise CoveError(f"state root {path}", "not a directory owned by us and writable "
                        "only by us: refusing it (set XDG_RUNTIME_DIR or pass --root)")
    return path


def check_id(cid: str) -> None:
    """Refuse ids that could escape the state root or confuse tools (runc's rule)."""
    if not cid:
        raise CoveError("container id", "must not be empty")
    if cid in (".", "..") or not set(cid) <= _ID_CHARS:
        raise CoveError(f"container id {cid!r}",
                        "invalid: use letters, digits and _ + - . only")


def rfc3339(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parens: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class State:
    """One container's record under the state root."""

    def __init__(self, root: str, cid: str, data: dict[str, Any]) -> None:
        self.root = root
        self.id = cid
        self.data = data

    @property
    def dir(self) -> str:
        return lite.join(self.root, self.id)

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def bundle(self) -> str:
        return str(self.data.get("bundle", ""))

    @property
    def fifo(self) -> str:
        return lite.join(self.dir, "exec.fifo")

    def alive(self) -> bool:
        pid = self.pid
        return pid > 0 and proc_start_time(pid) == self.data.get("init_start")

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if self.data.get("creating"):
            return "creating"
        if lite.exists(self.fifo):
            return "created"
        cg = self.data.get("cgroup")
        if cg:
            from cove.runtime.cgroups import open_manager_from_state

            try:
                if open_manager_from_state(cg).frozen():
                    return "paused"
            except (OSError, CoveError):
                pass
        return "running"

    def oci(self) -> dict[str, Any]:
        """The state as `cove-runtime state` prints it (runc's fields, spec order)."""
        status = self.status()
        out: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": self.data.get("owner", ""),
        }
        if self.data.get("annotations"):
            out["annotations"] = self.data["annotations"]
        return out

    def hook_state(self, status: str) -> str:
        """The JSON a hook reads on stdin, with the status the spec's lifecycle gives
        the hook's step: "created" for the create-time hooks (prestart, createRuntime,
        createContainer: the environment exists) and startContainer (the user's
        program has not run yet), "running" for poststart, "stopped" for poststop (as
        crun). A stopped container's pid is 0, as `state` says: the old one may have
        been reused."""
        d: dict[str, Any] = {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                             "pid": self.pid if status != "stopped" else 0,
                             "bundle": self.bundle}
        if self.data.get("annotations"):
            d["annotations"] = self.data["annotations"]
        return jsonio.dumps(d)

    def save(self) -> None:
        lite.write_atomic(lite.join(self.dir, "state.json"), jsonio.dumps(self.data).encode())

    def config_bytes(self) -> bytes:
        with open(lite.join(self.dir, "config.json"), "rb") as f:
            return f.read()


def load(root: str, cid: str) -> State:
    check_id(cid)
    path = lite.join(root, cid, "state.json")
    try:
        with open(path, "rb") as f:
            data = jsonio.loads(f.read())
    except FileNotFoundError:
        raise CoveError(f"container {cid!r}", "does not exist") from None
    except (OSError, jsonio.JSONError) as e:
        raise CoveError(f"container {cid!r}", f"state unreadable: {e}") from None
    return State(root, cid, data)


def list_ids(root: str) -> list[str]:
    try:
        names = posix.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if lite.exists(lite.join(root, n, "state.json")))


def remove_dir(path: str) -> None:
    """rm -r without shutil (which pulls in fnmatch and re); the tree is small and flat."""
    try:
        entries = posix.listdir(path)
    except FileNotFoundError:
        return
    for n in entries:
        p = lite.join(path, n)
        if lite.isdir(p) and not lite.islink(p):
            remove_dir(p)
        else:
            try:
                posix.unlink(p)
            except FileNotFoundError:
                pass
    try:
        posix.rmdir(path)
    except FileNotFoundError:
        pass
