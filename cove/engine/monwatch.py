"""What the monitor (cove/engine/monitor.py) keeps for one running container: its log
writer (the exactly-once copier, cove/engine/logcopy.py), its FIFOs' read ends, its
init (pid, start time, pidfd) and its terminal. Kept apart from the monitor's loop so
that each file has one job: this one holds, the monitor decides."""

from __future__ import annotations

import os

from cove.engine import logcopy, procs, state, ttywatch
from cove.engine import logs as logfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record


class Watch:
    """One running container: its log writer, its FIFOs' read ends, its init."""

    __slots__ = ("cdir", "code", "copier", "error", "exited", "finished", "hup", "name",
                 "parent", "pid", "pidfd", "rfds", "start", "tty")

    def __init__(self, paths: state.Paths, name: str, rec: Record,
                 scratch: logcopy.Scratch) -> None:
        self.name = name
        self.cdir = paths.cdir(name)
        lc = rec.get("HostConfig", {}).get("LogConfig", {}).get("Config", {})
        writer = logfile.JsonFileWriter(logfile.log_path(self.cdir),
                                  logfile.parse_size(lc["max-size"]) if lc.get("max-size")
                                  else 0, int(lc.get("max-file", "1")))
        self.copier = logcopy.Copier(self.cdir, writer, scratch)
        self.rfds: dict[int, str] = {}
        self.hup: set[int] = set()  # FIFOs whose writers have all gone
        self.pid, self.pidfd, self.parent = 0, -1, False
        self.start: int | None = None  # the init's start time (state.pid_alive)
        self.code: int | None = None
        self.error, self.finished, self.exited = "", "", 0.0
        self.tty: ttywatch.Tty | None = None  # a container with a terminal: its pty

    def fds(self) -> list[int]:
        """What the keeper holds for us: the init's pidfd, the FIFOs, the pty master."""
        return [*([self.pidfd] if self.pidfd >= 0 else []), *self.rfds,
                *(self.tty.fds() if self.tty else ())]

    def open_fifos(self, create: bool) -> None:
        for path, stream in zip(procs.fifo_paths(self.cdir), ("stdout", "stderr"),
                                strict=True):
            if create and not os.path.exists(path):
                os.mkfifo(path, 0o600)
            fd = procs.open_fifo_reader(path)
            self.rfds[fd] = stream
            self.copier.recover(fd, stream)  # what a killed monitor left half done
