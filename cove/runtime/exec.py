"""`exec`: run a new process inside a running container's namespaces and cgroup."""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.oci.spec import Process, Spec
from cove.runtime import process
from cove.runtime import state as runtime_state
from cove.runtime.nsexec import NS_PROC, NsPlan, spawn
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.runtime import ExecOptions
    from cove.runtime.nsexec import Sync
    from cove.runtime.seccomp import Program


def build_process(opts: ExecOptions, spec: Spec) -> Process:
    """From --process FILE, or the container's process with runc's overrides."""
    from cove.oci import jsonio

    if opts.process_file:
        try:
            if opts.process_file == "-":
                raw = os.read(0, 1 << 20)
            else:
                with open(opts.process_file, "rb") as f:
                    raw = f.read()
            obj = jsonio.loads(raw)
        except OSError as e:
            raise CoveError(f"--process {opts.process_file}", os_why(e)) from None
        except jsonio.JSONError as e:
            raise CoveError(f"--process {opts.process_file}", f"invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise CoveError("process", "expected object")
        return Process(obj, "process", need_cwd=False)
    if not opts.args:
        raise CoveError("exec", "a process (--process FILE) or arguments are required")
    base: dict[str, Any] = dict(spec.raw.get("process") or {})
    base["args"] = opts.args
    base["terminal"] = opts.tty
    base.pop("consoleSize", None)
    if opts.cwd:
        base["cwd"] = opts.cwd
    if opts.env:
        base["env"] = list(base.get("env") or []) + opts.env
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise CoveError(f"--user {opts.user}", "expected UID[:GID] as numbers")
        base["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if opts.additional_gids:
        user = dict(base.get("user") or {})
        user["additionalGids"] = opts.additional_gids
        base["user"] = user
    if opts.caps:
        caps = {k: list(v) for k, v in (base.get("capabilities") or {}).items()}
        for c in opts.caps:
            for k in ("bounding", "effective", "permitted", "ambient"):
                if c not in caps.setdefault(k, []):
                    caps[k].append(c)
        base["capabilities"] = caps
    if opts.no_new_privs:
        base["noNewPrivileges"] = True
    return Process(base, "process", need_cwd=False)


def _same_ns(pid: int, name: str) -> bool:
    try:
        a = os.stat(f"/proc/self/ns/{name}")
        b = os.stat(f"/proc/{pid}/ns/{name}")
    except OSError:
        return True
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _join_plan(spec: Spec, pid: int) -> NsPlan:
    """Join each of the container's namespaces that is not already ours."""
    plan = NsPlan()
    for ns in spec.linux.namespaces:
        name = NS_PROC[ns.type]
        if not _same_ns(pid, name):
            plan.add_join(ns.type, f"/proc/{pid}/ns/{name}")
    return plan


def _expect_eof(sync: Sync) -> None:
    """After "exec", the process's side closes: a message instead is why it failed."""
    msg = sync.recv()
    if msg is not None:
        if msg.startswith("error "):
            raise CoveError(msg[6:])
        raise CoveError("exec", f"unexpected message {msg!r}")


def exec_process(opts: ExecOptions) -> int:
    """Start the process; return its exit code (or 0 once started, with --detach)."""
    if opts.preserve_fds:
        process.check_preserve_fds(opts.preserve_fds)
    st = runtime_state.load(opts.root, opts.id)
    status = st.status()
    if status not in ("running", "created"):
        raise CoveError(f"container {opts.id!r}", f"cannot exec in a {status} container")
    spec = Spec.parse(st.config_bytes())
    proc = build_process(opts, spec)
    process.check_unknown_caps(proc, spec.annotations)
    if proc.terminal and not opts.console_socket:
        raise CoveError("exec --tty", "needs --console-socket")
    pid = st.pid
    plan = _join_plan(spec, pid)
    mgr = None
    if st.data.get("cgroup"):
        from cove.runtime.cgroups import open_manager_from_state

        mgr = open_manager_from_state(st.data["cgroup"])
    console_fd = -1
    if opts.console_socket:
        from cove.runtime.caller import connect_console

        console_fd = connect_console(opts.console_socket)
    userns = spec.linux.ns("user") is not None
    process.preload(proc, spec.linux.seccomp is not None)
    prog = None
    if spec.linux.seccomp is not None:
        from cove.runtime import seccomp

        prog = seccomp.program(spec.linux.seccomp, os.path.join(opts.root, seccomp.CACHE_DIR),
                            spec.annotations.get(seccomp.UNKNOWN_SYSCALLS_ANNOTATION) == "ignore")
    if not opts.detach:
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    if mgr is not None:
        plan.cgroup_fds = mgr.join_fds()  # C joins the v1 ones itself: no global lock
        plan.cgroup_dirfd = mgr.clone_fd()  # and is born in the v2 one
    joined = bool(plan.cgroup_fds)
    keep_groups = spec.annotations.get(process.KEEP_GROUPS) == "1"
    child, sync = spawn(plan, lambda s: _exec_stage2(proc, prog, console_fd, opts.preserve_fds,
                                                     userns, s, keep_groups))
    try:
        if mgr is not None and mgr.needs_apply(v1=not joined, v2=not plan.born_in_cgroup):
            mgr.apply(child, v1=not joined, v2=not plan.born_in_cgroup)
        sync.send("go")
        msg = sync.expect("pid")
        gpid = int(msg.split()[1])
        os.waitpid(child, 0)
        child = 0
        sync.send("start")
        if spec.linux.seccomp is not None and seccomp.wants_notify(spec.linux.seccomp):
            from cove.oci import jsonio

            seccomp.expect_after_notify(sync, "exec", gpid, spec.linux.seccomp or {},
                                   jsonio.loads(st.hook_state(status)))
        else:
            sync.expect("exec")
        _expect_eof(sync)
    except BaseException:
        if child:
            try:
                os.kill(child, 9)
                os.waitpid(child, 0)
            except OSError:
                pass
        raise
    finally:
        sync.close()
        if console_fd >= 0:
            os.close(console_fd)
    if opts.pid_file:
        from cove.runtime.caller import write_pid_file

        write_pid_file(opts.pid_file, gpid)
    if opts.detach:
        return 0
    from cove.runtime.caller import wait_forwarding

    return wait_forwarding(gpid)


def _exec_stage2(proc: Process, prog: Program | None, console_fd: int, preserve_fds: int,
                 userns: bool, sync: Sync, keep_groups: bool = False) -> None:
    if not userns:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)  # see init.py: no ptrace of us while we hold host fds
    if proc.terminal:
        process.setup_console(console_fd, proc.console_size, bind_console=False)
    process.apply_rlimits(proc)
    process.check_lsm(proc)
    process.enter_cwd(proc.cwd, create=False)
    prep = process.prepare_exec(proc, prog, sync, userns, preserve_fds, set(), keep_groups)
    sync.send("exec")
    try:
        process.final_exec(prep)
    except OSError as e:
        raise CoveError(f"exec {proc.args[0]}", os_why(e)) from None
