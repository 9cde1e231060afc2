"""cove-runtime's dispatch: one table of verbs, each reading only its own flags, and
three handlers with the same verbs. No root needed: nothing here starts a container."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from cove.cli import flags, isolation, runtime
from tests.lib.paths import ROOT

VERBS = ["create", "run", "start", "state", "kill", "delete", "ps", "exec_", "pause",
         "resume", "update", "events", "features"]


def test_reading_a_flag_outside_the_spec_is_a_bug_not_a_default() -> None:
    p = flags.parse(["--bundle", "b", "x"], {"bundle": "str", "detach": "bool"})
    assert p.s("bundle") == "b" and not p.b("detach") and p.given("bundle")
    with pytest.raises(LookupError, match="--pid-file: not a str flag"):
        p.s("pid-file")
    with pytest.raises(LookupError, match="--bundle: not a bool flag"):
        p.b("bundle")
    with pytest.raises(LookupError):
        p.given("force")


def _flags_read(fn: Callable[..., Any]) -> set[object]:
    """The flag names a verb function reads: f.s("x"), f.b("x"), f.given("x")..."""
    tree = ast.parse(inspect.getsource(fn))
    out: set[object] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "f"
                and node.func.attr in ("s", "b", "i", "lst", "given") and node.args
                and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)
    return out


@pytest.mark.parametrize("verb", sorted(runtime.VERBS))
def test_each_verb_reads_only_its_own_flags(verb: str) -> None:
    """Statically, so that a verb's rarely used branch cannot read a flag it lacks."""
    fn, spec, aliases, _ = runtime.VERBS[verb]
    read = _flags_read(fn)
    if fn in (runtime._create, runtime._run):
        read |= _flags_read(runtime._create_options)
    assert read <= set(spec), read - set(spec)
    assert set(aliases.values()) <= set(spec)


def test_every_handler_has_every_verb_with_one_signature() -> None:
    """mypy checks this too (the CLI's handler lookup returns a Handler); here it runs
    against the objects the CLI really dispatches to."""
    from cove.runtime import namespaces
    from cove.runtime.handler import Handler

    want = {v: list(inspect.signature(getattr(Handler, v)).parameters)[1:] for v in VERBS}
    for name in ("vm", "gvisor"):
        h = isolation.load(name)
        for v, params in want.items():
            assert list(inspect.signature(getattr(h, v)).parameters) == params, (name, v)
    for v, params in want.items():
        assert list(inspect.signature(getattr(namespaces, v)).parameters) == params, v


def test_one_dispatch_table() -> None:
    """No verb switch left beside the table (`if cmd == ...`)."""
    src = (ROOT / "cove" / "cli" / "runtime.py").read_text()
    assert "cmd ==" not in src.replace('cmd == "help"', "")
    assert "def _run_command" not in src
    assert "def run_command" not in (ROOT / "cove" / "cli" / "isolation.py").read_text()


def test_update_reads_only_flags_it_declares() -> None:
    """`update` reads cove.runtime.update.FLAGS by name: each must be in its spec."""
    from cove.runtime.update import FLAGS

    assert set(FLAGS) <= set(runtime.UPDATE_FLAGS)
