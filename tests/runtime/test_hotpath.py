"""cove-runtime's start-up budget and the module cache behind it (cove/runtime/boot.py).

The budget (budget.json beside this file) is what one `run` of busybox /bin/true may
import and how many file-system lookups it may make: a new import on the hot path, or
a change that walks the module search path again, fails here with what grew.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cove.oci.defaults import default_spec
from cove.runtime import boot
from tests.lib.bundles import Bundle
from tests.lib.paths import RUNTIME, runtime_py
from tests.lib.runtime import Env

BUDGET = json.loads((Path(__file__).parent / "budget.json").read_text())
# What a lookup is, for the budget: every system call that resolves a path or lists
# a directory.
LOOKUPS = ("openat", "openat2", "newfstatat", "statx", "access", "faccessat2", "readlink",
           "readlinkat", "getdents64", "statfs")
BANNED = {"re", "json", "argparse", "logging", "subprocess", "dataclasses", "typing", "enum",
          "signal", "shutil", "pathlib", "importlib", "threading"}


def _true_bundle(env: Env) -> Bundle:
    spec = default_spec()  # runc's defaults: read-only root, seccomp, masked paths
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    return env.bundle(spec)


def _run_args(env: Env, b: Bundle, cid: str) -> list[str]:
    return [RUNTIME, "--root", str(env.rt.root), "run", "--bundle", str(b.path), cid]


def test_run_imports_only_its_budget(env: Env) -> None:
    b = _true_bundle(env)
    env.rt("run", "--bundle", str(b.path), env.id(), check=True)  # the cache is warm
    cid = env.id()
    p = subprocess.run([sys.executable, "-X", "importtime", "-IS", runtime_py(),
                        *_run_args(env, b, cid)[1:]],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    mods = {line.split("|")[2].strip() for line in p.stderr.splitlines()
            if line.startswith("import time:") and "imported package" not in line}
    assert mods, p.stderr
    assert not mods & BANNED, mods & BANNED
    extra = mods - set(BUDGET["imports"])
    assert not extra, f"new on cove-runtime run's path: {sorted(extra)} (budget.json)"


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_run_lookups_within_budget(env: Env) -> None:
    b = _true_bundle(env)
    env.rt("run", "--bundle", str(b.path), env.id(), check=True)
    out = env.tmp / "strace.txt"
    cid = env.id()
    p = subprocess.run(["strace", "-f", "-c", "-o", str(out), "-e",
                        "trace=" + ",".join(LOOKUPS), *_run_args(env, b, cid)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if f and f[-1] in LOOKUPS:
            counts[f[-1]] = int(f[3])
    total = sum(counts.values())
    assert counts.get("newfstatat", 0) > 0, out.read_text()
    assert total <= BUDGET["lookups"], (f"{total} lookups per run, budget "
                                        f"{BUDGET['lookups']}: {counts}")


# -- the module cache itself (no root needed) ------------------------------------------

def test_cache_serves_a_module_only_while_its_source_is_unchanged() -> None:
    import cove.oci.defaults as mod

    entry = boot._code_of(mod)
    assert entry is not None
    origin, mtime, size, is_pkg, code = entry
    assert origin == mod.__file__ and not is_pkg and code
    f = boot.HotFinder({"cove.oci.defaults": entry})
    spec = f.find_spec("cove.oci.defaults")
    assert spec is not None and spec.loader is f and spec.origin == origin
    assert spec.cached == getattr(mod, "__cached__", None)  # what the usual import sets
    ns: dict[str, object] = {}
    exec(marshal.loads(spec.loader_state), ns)
    assert callable(ns["default_spec"])
    # The source edited (another mtime or size): not served, imported the usual way.
    for stale in ((origin, mtime + 1, size, False, code), (origin, mtime, size + 1, False, code)):
        assert boot.HotFinder({"cove.oci.defaults": stale}).find_spec("cove.oci.defaults") \
            is None
    assert f.find_spec("cove.oci.other") is None


def test_cache_file_is_trusted_only_when_private(tmp_path: Path) -> None:
    import cove.oci.defaults as mod

    entry = boot._code_of(mod)
    assert entry is not None
    path = tmp_path / "hot.bin"
    path.write_bytes(boot.dump({"cove.oci.defaults": entry}))
    path.chmod(0o644)
    got = boot.load(str(path))
    assert set(got) == {"cove.oci.defaults"} and bytes(got["cove.oci.defaults"][4]) == entry[4]
    path.chmod(0o666)  # anyone could have written it: ignored
    assert boot.load(str(path)) == {}
    path.chmod(0o644)
    head = marshal.dumps(("cove-hotpath-2", b"\0\0\r\n", {}))
    path.write_bytes(len(head).to_bytes(4, "little") + head)
    assert boot.load(str(path)) == {}  # another interpreter's bytecode
    for garbage in (b"garbage", b"\xff\xff\xff\x7f", b""):
        path.write_bytes(garbage)
        assert boot.load(str(path)) == {}
    assert boot.load(str(tmp_path / "missing")) == {}


def test_save_adds_what_was_imported_around_the_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "hot.bin")
    f = boot.HotFinder({})
    f.before = frozenset(sys.modules) - {"cove.oci.defaults"}
    assert boot.save(f, path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert "cove.oci.defaults" in boot.load(path)
    f.served.add("cove.oci.defaults")
    assert not boot.save(f, path)  # nothing new: not rewritten


def test_each_verb_has_its_own_cache_file() -> None:
    def name(*argv: str) -> str:
        return os.path.basename(boot.cache_path(list(argv)))

    tag = sys.implementation.cache_tag
    assert name("--root", "/r", "--log", "l", "--debug", "run", "--bundle", "b", "x") == \
        f"hotpath.{tag}.run.bin"
    assert name("--systemd-cgroup", "create", "x") == f"hotpath.{tag}.create.bin"
    assert name("--root", "/r") == f"hotpath.{tag}.none.bin"
    assert name("../../etc/x") == f"hotpath.{tag}.other.bin"  # never a path
