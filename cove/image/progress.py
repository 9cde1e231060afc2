"""Progress for layer transfers: rich bars on a terminal (when rich is installed), one
plain line per event otherwise, or nothing."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class Progress:
    """No output; the interface."""

    def start(self, key: str, what: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def done(self, key: str, msg: str) -> None:
        pass

    def status(self, key: str, msg: str) -> None:
        """What `key` is doing now (`unpacking`), before it is done."""

    def note(self, msg: str) -> None:
        pass

    def close(self) -> None:
        pass


class Plain(Progress):
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.what: dict[str, str] = {}

    def start(self, key: str, what: str, total: int) -> None:
        self.what[key] = what
        self.note(f"{what}: {total} bytes")

    def done(self, key: str, msg: str) -> None:
        self.note(f"{self.what.get(key, key)}: {msg}")

    def status(self, key: str, msg: str) -> None:
        self.done(key, msg)

    def note(self, msg: str) -> None:
        with self.lock:
            print(msg, file=self.out, flush=True)


class Rich(Progress):
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RP
        self.p = RP(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=Console(file=out), transient=False)
        self.p.start()
        self.tasks: dict[str, Any] = {}
        self.what: dict[str, str] = {}

    def start(self, key: str, what: str, total: int) -> None:
        self.what[key] = what
        self.tasks[key] = self.p.add_task(what, total=total)

    def advance(self, key: str, n: int) -> None:
        if key in self.tasks:
            self.p.advance(self.tasks[key], n)

    def done(self, key: str, msg: str) -> None:
        if key in self.tasks:
            t = self.tasks[key]
            self.p.update(t, description=f"{self.what[key]}: {msg}",
                          completed=self.p.tasks[t].total)
        else:
            self.note(f"{self.what.get(key, key)}: {msg}")

    def status(self, key: str, msg: str) -> None:
        if key in self.tasks:
            self.p.update(self.tasks[key], description=f"{self.what[key]}: {msg}")
        else:
            self.note(f"{self.what.get(key, key)}: {msg}")

    def note(self, msg: str) -> None:
        self.p.console.print(msg, highlight=False, markup=False)

    def close(self) -> None:
        self.p.stop()


def choose(quiet: bool = False, out: TextIO | None = None) -> Progress:
    out = out or sys.stderr
    if quiet:
        return Progress()
    if out.isatty():
        try:
            return Rich(out)
        except ImportError:
            pass
    return Plain(out)
