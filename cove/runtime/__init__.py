"""runtime layer of Cove: the namespaces runtime (runc's model), one module per verb.

`namespaces` is the runtime's entry point for cove-runtime's CLI: the namespaces
handler, with the verbs of cove.runtime.handler.Handler. It lives in the package's
__init__, which every cove-runtime command loads anyway, and each verb imports its
module only when called, so that dispatching through it costs no module of start-up.
The options of create/run and exec, which the CLI fills for whichever handler, are
here for the same reason (the verb modules import them only for annotations, so the
package and its verbs do not import each other).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _thread
    from typing import Any


class CreateOptions:
    """What `create` and `run` are asked, whichever handler does it."""

    def __init__(self, root: str, cid: str, bundle: str, pid_file: str = "",
                 console_socket: str = "", preserve_fds: int = 0, no_pivot: bool = False,
                 rootless: bool = False, systemd_cgroup: bool = False) -> None:
        self.root = root
        self.id = cid
        self.bundle = bundle
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.rootless = rootless
        self.systemd_cgroup = systemd_cgroup
        # From cgroups.prewarm.prewarm(), started before the imports of `create`.
        self.warm: _thread.LockType | None = None
        # A connected socket to send the pty master to, instead of --console-socket.
        self.console_fd = -1


class ExecOptions:
    """What `exec` is asked, whichever handler does it."""

    def __init__(self, root: str, cid: str) -> None:
        self.root = root
        self.id = cid
        self.process_file = ""
        self.args: list[str] = []
        self.tty = False
        self.detach = False
        self.pid_file = ""
        self.console_socket = ""
        self.env: list[str] = []
        self.cwd = ""
        self.user = ""
        self.caps: list[str] = []
        self.no_new_privs = False
        self.preserve_fds = 0
        self.additional_gids: list[int] = []


class Namespaces:
    """The namespaces handler: the container's processes in Linux namespaces, a cgroup,
    seccomp and a pivot_root'ed rootfs, as runc and crun do."""

    def create(self, o: CreateOptions) -> None:
        from cove.runtime.create import create

        create(o)

    def run(self, o: CreateOptions, detach: bool) -> int:
        from cove.runtime.run import run

        return run(o, detach)

    def start(self, root: str, cid: str) -> None:
        from cove.runtime.start import start

        start(root, cid)

    def state(self, root: str, cid: str) -> "dict[str, Any]":
        from cove.runtime.state import load

        return load(root, cid).oci()

    def kill(self, root: str, cid: str, sig: int, all_: bool) -> None:
        from cove.runtime.kill import kill

        kill(root, cid, sig, all_)

    def delete(self, root: str, cid: str, force: bool) -> None:
        from cove.runtime.delete import delete

        delete(root, cid, force)

    def ps(self, root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
        from cove.runtime.ps import render

        return render(root, cid, fmt, ps_args)

    def exec_(self, o: ExecOptions) -> int:
        from cove.runtime.exec import exec_process

        return exec_process(o)

    def pause(self, root: str, cid: str) -> None:
        from cove.runtime.pause import pause

        pause(root, cid)

    def resume(self, root: str, cid: str) -> None:
        from cove.runtime.pause import resume

        resume(root, cid)

    def update(self, root: str, cid: str, resources: "dict[str, Any]") -> None:
        from cove.runtime.update import update

        update(root, cid, resources)

    def events(self, root: str, cid: str, stats: bool, interval: float) -> None:
        from cove.runtime.events import events

        events(root, cid, stats, interval)

    def features(self) -> "dict[str, Any]":
        from cove.runtime.features import features

        return features()


namespaces = Namespaces()


def preload() -> None:
    """Import what the namespaces handler's create, start and delete import: for a
    long-lived caller that forks a child per verb (the engine's monitor), so that each
    child starts with them loaded, as a cove-runtime process never can."""
    import cove.runtime.create
    import cove.runtime.delete
    import cove.runtime.start  # noqa: F401
