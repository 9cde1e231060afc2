"""`cove-runtime checkpoint` and `restore`: runc's flags into cove.runtime's CRIU verbs.

Separate from cove.cli.runtime so that nothing of CRIU (protobuf, subprocess) is
imported by the other verbs. Only the namespaces handler can be checkpointed: a vm or
gvisor container is refused in one line.
"""

from __future__ import annotations

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.cli import flags
    from cove.runtime.handler import Handler

_UNSUPPORTED = {"checkpoint": ("page-server", "status-fd", "lsm-profile", "lsm-mount-context"),
                "restore": ("lsm-profile", "lsm-mount-context")}


def _namespaces_only(h: Handler, what: str) -> None:
    from cove.runtime import namespaces

    if h is not namespaces:
        raise CoveError(what, "this container's isolation handler (vm or gvisor) has no "
                        "CRIU checkpoint support")


def _refuse(f: flags.Parsed, what: str) -> None:
    for k in _UNSUPPORTED[what]:
        if f.given(k) and f.s(k):
            raise CoveError(f"{what} --{k}", "not supported yet")


def _empty_ns(f: flags.Parsed) -> str:
    vals = f.lst("empty-ns")
    if len(vals) > 1:
        raise CoveError("--empty-ns", "only network is supported (as runc)")
    return vals[0] if vals else ""


def checkpoint(root: str, cid: str, h: Handler, f: flags.Parsed) -> int:
    from cove.runtime.checkpoint import CheckpointOptions, checkpoint

    _namespaces_only(h, f"container {cid!r}")
    _refuse(f, "checkpoint")
    o = CheckpointOptions(f.s("image-path"), f.s("work-path"))
    o.leave_running = f.b("leave-running")
    o.tcp_established = f.b("tcp-established")
    o.ext_unix_sk = f.b("ext-unix-sk")
    o.shell_job = f.b("shell-job")
    o.file_locks = f.b("file-locks")
    o.pre_dump = f.b("pre-dump")
    o.parent_path = f.s("parent-path")
    o.manage_cgroups_mode = f.s("manage-cgroups-mode")
    o.empty_ns = _empty_ns(f)
    o.auto_dedup = f.b("auto-dedup")
    o.lazy_pages = f.b("lazy-pages")
    checkpoint(root, cid, o)
    return 0


def restore(root: str, cid: str, h: Handler, f: flags.Parsed, rootless: bool,
            systemd: bool) -> int:
    from cove.runtime.restore import RestoreOptions, restore

    _namespaces_only(h, "restore")
    _refuse(f, "restore")
    if rootless:
        raise CoveError("restore", "CRIU needs root (rootless restore is not supported)")
    o = RestoreOptions(root, cid, f.s("bundle"))
    o.image_path = f.s("image-path")
    o.work_path = f.s("work-path")
    o.detach = f.b("detach")
    o.pid_file = f.s("pid-file")
    o.console_socket = f.s("console-socket")
    o.no_pivot = f.b("no-pivot")
    o.tcp_established = f.b("tcp-established")
    o.ext_unix_sk = f.b("ext-unix-sk")
    o.shell_job = f.b("shell-job")
    o.file_locks = f.b("file-locks")
    o.manage_cgroups_mode = f.s("manage-cgroups-mode")
    o.empty_ns = _empty_ns(f)
    o.auto_dedup = f.b("auto-dedup")
    o.lazy_pages = f.b("lazy-pages")
    o.systemd_cgroup = systemd
    return restore(o)
