"""Running OCI hooks: the container state on stdin, a timeout, and a clear error.

Implemented with fork/exec and pidfd polling rather than `subprocess`, which would
cost cove-runtime ~10 ms of imports on every create.

A hook without `env` runs with the environment of whoever runs it (runc and crun pass
theirs on): the runtime's own for the hooks run on the host, the container process's
(`process.env`) for those run in the container's namespaces, so that nothing of the
host's environment crosses into the container. `"env": []` is an empty environment.
"""

from __future__ import annotations

import os
import select

from cove.errors import CoveError, os_why

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cove.oci.spec import Hook


def run_hook(kind: str, index: int, hook: Hook, state_json: str,
             default_env: Mapping[str, str] | None = None) -> None:
    """Run one hook to completion; raise CoveError if it fails or times out.

    `default_env` is the environment of a hook without `env` (the runtime's own when
    None)."""
    if hook.env is not None:
        env: Mapping[str, str] = dict(e.split("=", 1) for e in hook.env if "=" in e)
    else:
        env = os.environ if default_env is None else default_env
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(w)
            os.close(err_r)
            os.dup2(r, 0)
            os.dup2(err_w, 2)
            os.closerange(3, 1024)
            os.execve(hook.path, hook.args, env)
        except OSError as e:
            os.write(2, f"{e.strerror}\n".encode())
        os._exit(127)
    os.close(r)
    os.close(err_w)
    try:
        os.write(w, state_json.encode())
    except BrokenPipeError:
        pass  # the hook need not read its stdin
    os.close(w)
    status = _wait(pid, hook.timeout)
    try:
        err = os.read(err_r, 4096).decode(errors="replace").strip()
    finally:
        os.close(err_r)
    what = f"{kind} hook #{index} ({hook.path})"
    if status is None:
        raise CoveError(what, f"timed out after {hook.timeout}s")
    if os.WIFSIGNALED(status):
        raise CoveError(what, f"killed by signal {os.WTERMSIG(status)}")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise CoveError(what, f"exit status {code}" + (f": {err}" if err else ""))


def _wait(pid: int, timeout: int | None) -> int | None:
    if timeout is None:
        return os.waitpid(pid, 0)[1]
    pfd = os.pidfd_open(pid)
    try:
        p = select.poll()
        p.register(pfd, select.POLLIN)
        if not p.poll(timeout * 1000):
            os.kill(pid, 9)  # SIGKILL; `signal` imports enum
            os.waitpid(pid, 0)
            return None
        return os.waitpid(pid, 0)[1]
    finally:
        os.close(pfd)


def run_hooks(kind: str, hooks: list[Hook], state_json: str,
              default_env: Mapping[str, str] | None = None) -> None:
    """Run hooks in order; the first failure stops them and fails the operation (the
    create-time and startContainer hooks: the spec has the container torn down)."""
    for i, h in enumerate(hooks):
        run_hook(kind, i, h, state_json, default_env)


def run_hooks_warning(kind: str, hooks: list[Hook], state_json: str) -> None:
    """Run every hook, each failure a warning line: the spec has a failing poststart or
    poststop hook logged, the remaining hooks run and the lifecycle go on as if it had
    succeeded."""
    for i, h in enumerate(hooks):
        try:
            run_hook(kind, i, h, state_json)
        except CoveError as e:
            os.write(2, f"cove-runtime: warning: {e}\n".encode(errors="replace"))
        except OSError as e:  # fork or pipe: the hook did not run
            os.write(2, f"cove-runtime: warning: {kind} hook #{i} ({h.path}): "
                        f"{os_why(e)}\n".encode(errors="replace"))
