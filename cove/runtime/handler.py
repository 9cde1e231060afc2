"""The verbs every isolation handler implements: one signature each.

Three handlers stand behind `cove-runtime`: the namespaces runtime (cove.runtime's own
verbs, `cove.runtime.namespaces`), the vm handler (cove.handlers.vm.handler: a microVM
per container) and the gvisor handler (cove.handlers.gvisor: runsc). The CLI parses a
verb's flags into these arguments and calls the one the container uses; a handler that
cannot do a verb raises CoveError saying so.

Only for the type checker: nothing imports this module at run time (a Protocol costs
`typing`, which cove-runtime's start-up budget does not allow); the CLI's handler lookup
is annotated with it, so mypy checks that each handler (an object or a module) fits.
"""

from __future__ import annotations

from typing import Any, Protocol

from cove.runtime import CreateOptions, ExecOptions


class Handler(Protocol):
    def create(self, o: CreateOptions) -> None:
        """Build the container; its process waits for `start`."""

    def run(self, o: CreateOptions, detach: bool) -> int:
        """create + start; in the foreground, wait, then delete; the exit code."""

    def start(self, root: str, cid: str) -> None:
        """Let the created container's process run."""

    def state(self, root: str, cid: str) -> dict[str, Any]:
        """The OCI state document."""

    def kill(self, root: str, cid: str, sig: int, all_: bool) -> None:
        """Signal the container's process (all_: every process of it)."""

    def delete(self, root: str, cid: str, force: bool) -> None:
        """Remove a stopped container (force: stop it first)."""

    def ps(self, root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
        """Its processes: `table` (through ps(1), with ps_args) or `json` (pids)."""

    def exec_(self, o: ExecOptions) -> int:
        """Run another process in the container; its exit code (0 when detached)."""

    def pause(self, root: str, cid: str) -> None:
        """Freeze every process of the container."""

    def resume(self, root: str, cid: str) -> None:
        """Thaw a paused container."""

    def update(self, root: str, cid: str, resources: dict[str, Any]) -> None:
        """Apply new linux.resources."""

    def events(self, root: str, cid: str, stats: bool, interval: float) -> None:
        """Print stats (once, with stats) or OOM events and stats every interval."""

    def features(self) -> dict[str, Any]:
        """The OCI features document of what this handler implements."""
