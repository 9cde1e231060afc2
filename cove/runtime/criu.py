"""CRIU's RPC: `criu swrk FD` and its protobuf request/response, for checkpoint/restore.

CRIU is driven the way runc and crun drive it: a SOCK_SEQPACKET socket pair, one end
handed to `criu swrk`, one `criu_req` per message and `criu_resp` back, with NOTIFY
round trips (`post-dump`, `post-restore`, `orphan-pts-master`...) in between when
`notify_scripts` is set. Not scraping the command line keeps options typed and the
restored pid exact.

The message classes are CRIU's own (`rpc.proto`): Debian's `criu` package ships them
as pycriu's `rpc_pb2`, generated code that needs only the `protobuf` package, so it is
loaded from its file into our interpreter (the venv does not see dist-packages).
COVE_CRIU_RPC_PB2 names another copy; COVE_CRIU (or `--criu`) another criu binary.

Only checkpoint and restore import this module: none of it is on the start-up path of
the other verbs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PB2_PATHS = ("/usr/lib/python3/dist-packages/pycriu/rpc_pb2.py",
             "/usr/local/lib/python3/dist-packages/pycriu/rpc_pb2.py")
_rpc: Any = None


def binary() -> str:
    """The criu binary, or a one-line error naming the package."""
    path = os.environ.get("COVE_CRIU") or shutil.which("criu") or next(
        (p for p in ("/usr/sbin/criu", "/sbin/criu") if os.access(p, os.X_OK)), "")
    if not path:
        raise CoveError("criu", "not installed (Debian: apt-get install criu)")
    return path


def rpc() -> Any:
    """CRIU's rpc_pb2 module (criu_req, criu_opts, criu_resp and the enums)."""
    global _rpc
    if _rpc is not None:
        return _rpc
    import importlib.util

    _protobuf_path()
    env = os.environ.get("COVE_CRIU_RPC_PB2")
    for path in ([env] if env else PB2_PATHS):
        if not os.path.isfile(path):
            continue
        spec = importlib.util.spec_from_file_location("_cove_criu_rpc_pb2", path)
        if spec is None or spec.loader is None:
            continue
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except ImportError as e:  # no protobuf package
            raise CoveError("criu", f"its RPC bindings ({path}) need the protobuf "
                            f"package: {e}") from None
        _rpc = mod
        return mod
    raise CoveError("criu", "its RPC bindings (pycriu's rpc_pb2.py) are not installed "
                    "(Debian: apt-get install criu)")


def _protobuf_path() -> None:
    """cove-runtime runs without `site` (-I -S, for its start-up): put the venv's
    site-packages on sys.path for protobuf, or else Debian's python3-protobuf (same
    interpreter version) that criu's package depends on."""
    import sys

    if importlib_find("google.protobuf"):
        return
    import sysconfig

    for d in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
              "/usr/lib/python3/dist-packages"):
        if d and os.path.isdir(os.path.join(d, "google", "protobuf")) and d not in sys.path:
            sys.path.append(d)
            if importlib_find("google.protobuf"):
                return


def importlib_find(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


class Swrk:
    """One `criu swrk` service process and our end of its socket."""

    def __init__(self, *, extra_fds: list[int] | None = None) -> None:
        self.exe = binary()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.set_inheritable(False)
        fds = [theirs.fileno(), *(extra_fds or [])]
        try:
            # criu's own output (it has little: the log file has the details) goes to
            # our stderr; stdin/stdout stay ours too: restored tasks may inherit them.
            self.proc = subprocess.Popen([self.exe, "swrk", str(theirs.fileno())],
                                         pass_fds=fds, close_fds=True)
        except OSError as e:
            self.sock.close()
            raise CoveError("criu", f"{self.exe}: {e.strerror or e}") from None
        finally:
            theirs.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, req: Any, notify: Callable[[str, int, list[int]], None] | None = None
             ) -> Any:
        """Send `req`, answer NOTIFY messages (calling `notify(script, pid, fds)`, whose
        exception fails the request), return the final criu_resp."""
        m = rpc()
        self.sock.sendall(req.SerializeToString())
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 8)
            except OSError as e:
                raise CoveError("criu", f"RPC: {e.strerror or e}") from None
            if not data:
                raise CoveError("criu", "exited without an answer")
            resp = m.criu_resp()
            resp.ParseFromString(data)
            if resp.type != m.NOTIFY:
                for fd in fds:
                    os.close(fd)
                return resp
            ok = True
            err: BaseException | None = None
            try:
                if notify is not None:
                    notify(resp.notify.script, resp.notify.pid, fds)
            except BaseException as e:  # answered as a failure, raised after
                ok, err = False, e
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            ans = m.criu_req()
            ans.type = m.NOTIFY
            ans.notify_success = ok
            self.sock.sendall(ans.SerializeToString())
            if err is not None:
                raise err

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Flags:
    """The flags runc's checkpoint and restore share (CheckpointOptions and
    RestoreOptions add their own)."""

    def __init__(self, image_path: str = "", work_path: str = "") -> None:
        self.image_path = image_path
        self.work_path = work_path
        self.tcp_established = False
        self.ext_unix_sk = False
        self.shell_job = False
        self.file_locks = False
        self.manage_cgroups_mode = ""
        self.empty_ns = ""
        self.auto_dedup = False
        self.lazy_pages = False


def request(kind: str, o: Flags, img_fd: int, work_fd: int, log_file: str) -> Any:
    """A criu_req of type `kind` (DUMP, PRE_DUMP, RESTORE) with the options dump and
    restore set alike: image and work directories, log, cgroups, NOTIFY scripts, the
    shared flags. The caller adds what is its own."""
    m = rpc()
    req = m.criu_req()
    req.type = getattr(m, kind)
    opts = req.opts
    opts.images_dir_fd = img_fd
    opts.work_dir_fd = work_fd
    opts.log_level = 4
    opts.log_file = log_file
    opts.manage_cgroups = True
    opts.notify_scripts = True
    opts.shell_job = o.shell_job
    opts.ext_unix_sk = o.ext_unix_sk
    opts.tcp_established = o.tcp_established
    opts.file_locks = o.file_locks
    opts.orphan_pts_master = True
    opts.auto_dedup = o.auto_dedup
    if o.empty_ns:
        opts.empty_ns = empty_ns_flag(o.empty_ns)
    if o.manage_cgroups_mode:
        opts.manage_cgroups_mode = cg_mode(o.manage_cgroups_mode)
    return req


def last_error(log_path: str) -> str:
    """CRIU's reason, from its log: the first `Error (file:line): ...` line, which names
    the cause (the later ones are its consequences), without the source position."""
    try:
        with open(log_path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        i = line.find("Error (")
        if i >= 0:
            msg = line[i + 7:]
            return msg.split("): ", 1)[1].strip() if "): " in msg else msg.strip()
    return ""


def failure(what: str, resp: Any, log_path: str) -> CoveError:
    """The one-line error of a failed request: CRIU's reason from its log."""
    why = last_error(log_path) or (resp.cr_errmsg if resp is not None and
                                   resp.HasField("cr_errmsg") else "")
    if not why and resp is not None and resp.HasField("cr_errno") and resp.cr_errno:
        why = os.strerror(resp.cr_errno)
    return CoveError(f"criu {what}", f"{why or 'failed'} (log: {log_path})")


def version() -> tuple[int, int, int]:
    """CRIU's (major, minor, sublevel), through the VERSION request."""
    m = rpc()
    s = Swrk()
    try:
        req = m.criu_req()
        req.type = m.VERSION
        resp = s.call(req)
    finally:
        s.close()
    if not resp.success or not resp.HasField("version"):
        raise CoveError("criu", "VERSION request failed")
    v = resp.version
    return v.major_number, v.minor_number, v.sublevel if v.HasField("sublevel") else 0


def check(work_dir: str) -> str:
    """Whether CRIU works on this kernel: "" or CRIU's reason (the CHECK request; its
    log, written in `work_dir`, says why)."""
    m = rpc()
    os.makedirs(work_dir, 0o700, exist_ok=True)
    wfd = os.open(work_dir, os.O_DIRECTORY | os.O_RDONLY)
    s = Swrk(extra_fds=[wfd])
    try:
        req = m.criu_req()
        req.type = m.CHECK
        req.opts.images_dir_fd = wfd
        req.opts.work_dir_fd = wfd
        req.opts.log_file = "check.log"
        req.opts.log_level = 2
        resp = s.call(req)
    finally:
        s.close()
        os.close(wfd)
    if resp.success:
        return ""
    return last_error(os.path.join(work_dir, "check.log")) or "criu check failed"


def cg_mode(name: str) -> int:
    """--manage-cgroups-mode's value (soft, full, strict, ignore) as CRIU's enum."""
    m = rpc()
    modes = {"soft": m.SOFT, "full": m.FULL, "strict": m.STRICT, "ignore": m.IGNORE}
    if name not in modes:
        raise CoveError(f"--manage-cgroups-mode {name}", "expected soft, full, strict "
                        "or ignore")
    return int(modes[name])


def empty_ns_flag(name: str) -> int:
    """--empty-ns's value (network: as runc, the one namespace it allows)."""
    if name in ("network", "net"):
        return 0x40000000  # CLONE_NEWNET
    raise CoveError(f"--empty-ns {name}", "only network is supported (as runc)")
