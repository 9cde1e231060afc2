"""Cove's layers import only downwards, and no two modules import each other.

Every module under cove/ is parsed (not imported: no root, no side effects) and every
import statement in it is collected, the ones inside functions included: a lazy import
is still a dependency, only a later one. Two checks:

- direction: a module imports only from its own layer or the layers below it
  (sys -> oci -> runtime -> image -> engine -> handlers -> cli), plus the few named
  rules of issue 19 (runtime never imports image/engine/cli, image never imports
  runtime except through the public entry points listed below, oci never imports
  runtime, sys imports nothing of Cove);
- cycles: no strongly connected component of more than one module, except the ones
  listed in KNOWN_CYCLES with the reason they are still there. Imports under
  `if TYPE_CHECKING:` are left out of this check (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.lib.paths import ROOT

PKG = ROOT / "cove"

# Lowest first. `cove` (the package's __init__) and `cove.errors` are the base that
# every layer may use: the version string and the one error type.
LAYERS = ["sys", "oci", "runtime", "image", "engine", "handlers", "cli"]
BASE = {"cove", "cove.errors", "cove._commit", "cove.lazy"}

# Imports that cross a layer the wrong way on purpose: (importer, imported) -> why.
ALLOWED: dict[tuple[str, str], str] = {
    # The package's lazy facade: `cove.run(...)`, `cove.containers` load the engine's
    # Python API on first attribute access (a module __getattr__), so `import cove`
    # stays free for cove-runtime.
    ("cove", "cove.engine.api"): "the public Python API, loaded on first use",
}

# The runtime's public entry points: the only runtime modules that the image and engine
# layers may import (they start containers through the `cove-runtime` binary; these are
# the few things they need in-process). module -> why.
RUNTIME_PUBLIC: dict[str, str] = {
    "cove.runtime": "the namespaces handler and the options of create/run/exec",
    "cove.runtime.state": "proc_start_time (is this pid still the process we started), "
                          "OCI_VERSION",
    "cove.runtime.caller": "the terminal relay of a foreground `cove run -t`",
    "cove.runtime.features": "libseccomp_version for `cove info`",
    "cove.runtime.cgroups.detect": "the cgroup layout for `cove info`",
    "cove.runtime.cgroups.prewarm": "the cgroup migration's wait, started early by the "
                                    "engine's create (cove/engine/container/create.py)",
}
IMAGE_MAY_USE_RUNTIME: dict[str, str] = {}  # none: bundles start from cove.oci.defaults

# Import cycles that are known and not yet removed, with why. A cycle found must lie
# inside one of these sets of modules, or (KNOWN_CYCLE_PACKAGES) inside one package.
# (The network cycle, network <-> netcontainer <-> rootless, and the cli one, ops <->
# run, were split in issue 19: the networks' records moved below all three into
# cove/engine/netrecords.py, run's flags into cove/cli/runflags.py.)
KNOWN_CYCLES: dict[frozenset[str], str] = {
}
KNOWN_CYCLE_PACKAGES: dict[str, str] = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported cove module, only under TYPE_CHECKING) for every import in the file.

    `from a.b import c` names the submodule a.b.c where there is one, else a.b;
    relative imports are resolved against the importing package."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            tc = typing_only or (isinstance(child, ast.If) and _is_type_checking(child))
            if isinstance(child, ast.If) and _is_type_checking(child):
                for n in child.body:
                    visit_one(n, True)
                for n in child.orelse:
                    visit_one(n, typing_only)
                continue
            visit_one(child, tc)

    def visit_one(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "cove" or a.name.startswith("cove."):
                    out.append((_longest(a.name, known), typing_only))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            if base == "cove" or base.startswith("cove."):
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in known else _longest(base, known), typing_only))
        visit(node, typing_only)

    visit(tree, False)
    return [(m, tc) for m, tc in out if m != name]


def _longest(dotted: str, known: set[str]) -> str:
    parts = dotted.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def graph() -> dict[str, dict[str, bool]]:
    """importer -> {imported: only under TYPE_CHECKING}."""
    mods = all_modules()
    known = set(mods)
    g: dict[str, dict[str, bool]] = {}
    for name, path in mods.items():
        edges: dict[str, bool] = {}
        for m, tc in imports_of(name, path, known):
            edges[m] = edges.get(m, True) and tc
        g[name] = edges
    return g


def layer(mod: str) -> str:
    if mod in BASE:
        return "base"
    top = mod.split(".")[1]
    return top


def test_every_package_has_a_layer() -> None:
    tops = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops <= set(LAYERS), tops - set(LAYERS)


def test_imports_go_down() -> None:
    bad = []
    for mod, edges in graph().items():
        lm = layer(mod)
        for dep in edges:
            ld = layer(dep)
            if ld == "base" or lm == ld or (mod, dep) in ALLOWED:
                continue
            if lm == "base":
                bad.append(f"{mod} -> {dep} (the base imports no layer)")
            elif lm == "sys":
                bad.append(f"{mod} -> {dep} (sys imports nothing of Cove)")
            elif lm == "image" and ld == "runtime" and dep in IMAGE_MAY_USE_RUNTIME:
                continue
            elif LAYERS.index(ld) > LAYERS.index(lm):
                bad.append(f"{mod} -> {dep} ({lm} is below {ld})")
    assert not bad, "imports against the layers:\n  " + "\n  ".join(sorted(bad))


def test_image_and_engine_use_only_the_runtimes_public_entry_points() -> None:
    bad = []
    for mod, edges in graph().items():
        lm = layer(mod)
        if lm not in ("image", "engine"):
            continue
        public = IMAGE_MAY_USE_RUNTIME if lm == "image" else RUNTIME_PUBLIC
        bad += [f"{mod} -> {d}" for d in edges if layer(d) == "runtime" and d not in public]
    assert not bad, "not a public entry point of the runtime:\n  " + "\n  ".join(sorted(bad))


def test_oci_never_imports_the_runtime() -> None:
    bad = [f"{m} -> {d}" for m, e in graph().items() if layer(m) == "oci" for d in e
           if layer(d) not in ("base", "sys", "oci")]
    assert not bad, bad


def test_sys_imports_nothing_of_cove() -> None:
    g = graph()
    bad = [f"{m} -> {d}" for m, e in g.items() if layer(m) == "sys" for d in e
           if d not in ("cove.sys", "cove.errors") and layer(d) != "sys"]
    assert not bad, bad


def _cycles(g: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        # Iterative: a recursive walk of ~200 modules is fine, but no recursion limit
        # to think about.
        work = [(v, iter(sorted(g.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def _known(cycle: frozenset[str]) -> bool:
    return any(cycle <= k for k in KNOWN_CYCLES) or any(
        all(m.startswith(p + ".") for m in cycle) for p in KNOWN_CYCLE_PACKAGES)


def _runtime_graph() -> dict[str, set[str]]:
    return {m: {d for d, tc in e.items() if not tc and (m, d) not in ALLOWED}
            for m, e in graph().items()}


def test_no_import_cycles() -> None:
    unknown = [sorted(c) for c in _cycles(_runtime_graph()) if not _known(c)]
    assert not unknown, f"import cycles: {unknown}"


def test_known_cycles_still_exist() -> None:
    """A cycle that is gone comes off the list, so that it cannot come back unnoticed."""
    found = _cycles(_runtime_graph())
    stale: list[list[str] | str] = [sorted(k) for k in KNOWN_CYCLES
                                    if not any(len(c & k) > 1 for c in found)]
    stale += [p for p in KNOWN_CYCLE_PACKAGES
              if not any(all(m.startswith(p + ".") for m in c) for c in found)]
    assert not stale, f"no longer cycles, remove from KNOWN_CYCLES: {stale}"


def test_the_walk_sees_function_level_imports() -> None:
    """The checks are only as good as the walk: a lazy import inside a function counts."""
    g = graph()
    assert "cove.runtime.state" in g["cove.cli.runtime"]  # imported inside functions only
    assert "cove.runtime.cgroups.prewarm" in g["cove.cli.runtime"]


def test_the_handler_protocol_is_for_the_type_checker_only() -> None:
    """cove.runtime.handler imports `typing` (a Protocol): cove-runtime's budget allows
    it only under TYPE_CHECKING."""
    bad = [m for m, e in graph().items() if e.get("cove.runtime.handler") is False]
    assert not bad, bad


def test_the_cycle_finder_finds_cycles() -> None:
    """The cycle check is only as good as Tarjan's walk: a cycle of three, a self-loop
    left alone, a module outside the cycle that imports into it."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "c"}, "d": {"a"}, "e": set()}
    assert _cycles(g) == [frozenset({"a", "b", "c"})]
    assert _cycles({"x": {"y"}, "y": set()}) == []


# -- module aliases ---------------------------------------------------------------------

# Issue 19: a one- or two-letter alias (`S`, `L`, `C`, `NC`) meant two or three
# different modules across the tree (`L` = logs / layers / libc). Modules are named by
# their names (`state.Paths`, `logs.parse_since`), or where that name is taken in the
# file, by a longer one that says which (`engine_state`, `desired_state`). The files
# listed here still use such aliases and come off the list when their owner next passes
# through them. A file not listed here fails.
ALIASES_PENDING: dict[str, str] = {
}

# Whole directories (or bench scripts) left out of the alias check for now, with why.
ALIAS_PENDING_DIRS: dict[str, str] = {}


def _alias_checked_files() -> list[Path]:
    """cove/, tests/ and bench/: the .py files, and the bench scripts that have no
    suffix (the executable Python files directly under bench/ and bench/*/)."""
    files = {p for top in ("cove", "tests", "bench") for p in (ROOT / top).rglob("*.py")}
    bench = ROOT / "bench"
    for d in [bench, *(p for p in bench.iterdir() if p.is_dir())]:
        for p in d.iterdir():
            if p.is_file() and not p.suffix and p.stat().st_mode & 0o111:
                with p.open("rb") as fh:
                    if b"python" in fh.readline():
                        files.add(p)
    return sorted(files)


def test_module_aliases_say_what_they_are() -> None:
    bad = []
    for path in _alias_checked_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALIASES_PENDING or any(rel == d or rel.startswith(d + "/")
                                         for d in ALIAS_PENDING_DIRS):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                base = node.module or "" if isinstance(node, ast.ImportFrom) else ""
                # `from . import state as S` is a module of Cove too
                ours = isinstance(node, ast.ImportFrom) and node.level > 0
                for a in node.names:
                    full = f"{base}.{a.name}" if base else a.name
                    if (ours or full.startswith("cove")) and a.asname \
                            and len(a.asname) <= 2 and a.asname.isupper():
                        bad.append(f"{rel}:{node.lineno}: {a.name} as {a.asname}")
    assert not bad, "one-letter module aliases (name the module):\n  " + "\n  ".join(bad)


def test_aliases_pending_are_still_pending() -> None:
    """A file that no longer uses such an alias comes off the list, so that one cannot
    come back unnoticed."""
    stale = []
    for rel in ALIASES_PENDING:
        path = ROOT / rel
        if not path.exists():
            stale.append(f"{rel} (gone)")
            continue
        tree = ast.parse(path.read_text(), rel)
        if not any(a.asname and len(a.asname) <= 2 and a.asname.isupper()
                   for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                   for a in n.names):
            stale.append(rel)
    assert not stale, f"no longer use one-letter aliases, remove from ALIASES_PENDING: {stale}"
