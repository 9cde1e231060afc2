"""The one error type that every layer raises for a user-facing failure.

It carries the two halves of the line the CLI prints, `cove-runtime: <what>: <why>`,
and the exit status to use.
"""


class CoveError(Exception):
    """A failure to report as one line: `<what>: <why>`."""

    def __init__(self, what: str, why: str = "", code: int = 1) -> None:
        super().__init__(f"{what}: {why}" if why else what)
        self.what = what
        self.why = why
        self.code = code


def os_why(e: OSError) -> str:
    """The reason part of an OSError, without Python's `[Errno N]` prefix."""
    if e.filename is not None:
        return f"{e.filename}: {e.strerror}"
    return e.strerror or str(e)
