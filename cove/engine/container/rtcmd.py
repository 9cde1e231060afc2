"""The engine's calls of cove-runtime for a container: its command line (the binary
and the state root's runtime directory), a quiet call, and `delete --force`."""

from __future__ import annotations

import os
import subprocess

from cove.engine import state
from cove.engine.spawn import runtime_binary


def runtime(paths: state.Paths) -> list[str]:
    return [runtime_binary(), "--root", paths.runtime_root]


def rt_quiet(paths: state.Paths, *args: str) -> int:
    return subprocess.call([*runtime(paths), *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def rt_delete(paths: state.Paths, name: str) -> None:
    """`cove-runtime delete --force`, when the runtime has state for it (a run of the
    runtime costs tens of ms)."""
    if os.path.exists(os.path.join(paths.runtime_root, name, "state.json")):
        rt_quiet(paths, "delete", "--force", name)


def exec_argv(paths: state.Paths, env: list[str], user: str | None,
              workdir: str | None) -> list[str]:
    """`cove-runtime exec` with the process's environment, user and working directory,
    before its own flags (-d, -t) and the container and command (`cove exec`, the
    Python API's exec_run)."""
    args = [*runtime(paths), "exec"]
    for e in env:
        args += ["-e", e]
    if workdir:
        args += ["--cwd", workdir]
    if user:
        args += ["-u", user]
    return args
