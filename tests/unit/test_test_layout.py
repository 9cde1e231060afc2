"""The tests' own layout (issue 19): helpers in tests/lib, fixtures in conftest files.

A test that imports from a conftest gets a second copy of its fixtures and ties itself
to a directory's set-up; a poll loop of a test's own drifts from the others (one
returned the value, one None; one waited 15 s, one 20). So: no module under tests/
imports a conftest (a conftest imports from tests/lib, the fixtures of tests/conftest.py
are found without one), no module under tests/ imports another test module (a test
file, a directory's package, a helper beside the tests) but only tests/lib, only
tests/lib/wait.py defines `wait_for` or a poll loop by one of its other names, and
tests/lib holds no fixture. Parsed, not imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.lib.paths import ROOT

TESTS = ROOT / "tests"
# What ad-hoc poll loops were called before there was one (module-level or nested
# functions; a method of that name, say an event reader's, is something else).
POLL_NAMES = {"wait_for", "wait_until", "_wait", "_wait_for", "_wait_until", "_poll"}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(TESTS.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) of every import, at any depth (a function's own imports too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for a in node.names:  # `from tests.x import conftest`
                yield node.lineno, f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.AST, in_class: bool = False) -> Iterator[tuple[Function, bool]]:
    """Every function under `tree`, with whether it is a method."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, in_class
            yield from _functions(node, False)
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, True)
        else:
            yield from _functions(node, in_class)


def test_nothing_imports_a_conftest() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {mod}" for path, tree in _modules()
           for line, mod in _imported(tree)
           if mod == "conftest" or mod.endswith(".conftest")]
    assert not bad, "imports from a conftest (move the helper to tests/lib):\n" + \
        "\n".join(bad)


def _tests_imports(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of a module under tests/, relative ones resolved:
    `from tests.x import y` names tests.x.y where that is a module, else tests.x."""
    pkg = ".".join(path.relative_to(ROOT).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_mod = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (ROOT / Path(*sub.split(".")) / "__init__.py").exists()
                yield node.lineno, sub if is_mod else base


def test_tests_import_only_tests_lib() -> None:
    """A test that imports another test file runs with that file's module-level set-up
    and ties the two together; shared helpers live in tests/lib."""
    bad = [f"{path.relative_to(ROOT)}:{line}: {mod}" for path, tree in _modules()
           for line, mod in _tests_imports(path, tree)
           if (mod == "tests" or mod.startswith("tests."))
           and mod != "tests.lib" and not mod.startswith("tests.lib.")]
    assert not bad, "imports a test module (move what it shares to tests/lib):\n" + \
        "\n".join(bad)


def test_one_wait_for() -> None:
    own = TESTS / "lib" / "wait.py"
    bad = [f"{path.relative_to(ROOT)}:{fn.lineno}: {fn.name}"
           for path, tree in _modules() if path != own
           for fn, in_class in _functions(tree)
           if not in_class and fn.name in POLL_NAMES]
    assert not bad, "a poll loop of its own (use tests/lib/wait.py's wait_for):\n" + \
        "\n".join(bad)


def test_helpers_hold_no_fixture() -> None:
    bad = []
    for path, tree in _modules():
        if "lib" not in path.relative_to(TESTS).parts[:1]:
            continue
        for fn, _ in _functions(tree):
            for d in fn.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    bad.append(f"{path.relative_to(ROOT)}:{fn.lineno}")
    assert not bad, "fixtures belong in a conftest:\n" + "\n".join(bad)


def test_the_old_helper_modules_are_gone() -> None:
    assert not (TESTS / "peerlib.py").exists() and not (TESTS / "helpers.py").exists()
