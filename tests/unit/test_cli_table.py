"""cove/cli/main.py's COMMANDS table names, for every command, the module that
registers it (a run imports only that module): checked against what each registers."""

from __future__ import annotations

import importlib
from typing import Any

from cove.cli.main import COMMANDS, MODULES, _Skip


class _Names:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_parser(self, name: str, **kw: Any) -> _Skip:
        self.names += [name, *kw.get("aliases", ())]
        return _Skip()


def test_every_command_is_in_the_table_under_its_module() -> None:
    seen = {}
    for mod in MODULES:
        rec = _Names()
        importlib.import_module(f"cove.cli.{mod}").register(rec)
        for n in rec.names:
            seen[n] = mod
    assert seen == COMMANDS
