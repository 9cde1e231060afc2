"""Choosing a handler: the annotation, the entry points, bad names; the fast path."""

from __future__ import annotations

import subprocess
import sys

from tests.lib.bundles import base_config
from tests.lib.handlers import VM_RUNTIME, runtime
from tests.lib.paths import ROOT
from tests.lib.runtime import Env


def test_unknown_handler_annotation(env: Env) -> None:
    cfg = base_config(["true"])
    cfg["annotations"] = {"io.cove.isolation": "bogus"}
    b = env.bundle(cfg)
    r = env.rt("create", "--bundle", str(b.path), env.id())
    assert r.returncode == 1
    assert r.stderr.strip() == ("cove-runtime: annotation io.cove.isolation=bogus: unknown "
                                "handler (expected container, gvisor or vm)")


def test_entry_point_refuses_weaker_annotation(env: Env) -> None:
    cfg = base_config(["true"])
    cfg["annotations"] = {"io.cove.isolation": "container"}
    b = env.bundle(cfg)
    r = runtime(env, VM_RUNTIME)("create", "--bundle", str(b.path), env.id())
    assert r.returncode == 1 and "conflicts with cove-runtime-vm" in r.stderr


def test_container_handler_by_annotation(env: Env) -> None:
    cfg = base_config(["sh", "-c", "echo plain"])
    cfg["annotations"] = {"io.cove.isolation": "container"}
    b = env.bundle(cfg)
    r = env.rt("run", "--bundle", str(b.path), env.id())
    assert r.returncode == 0 and r.stdout == "plain\n", r.stderr


def test_default_path_does_not_import_handlers() -> None:
    code = ("import sys; sys.argv=['cove-runtime','--help']; from cove.cli import runtime; "
            "runtime.main(); print(sorted(m for m in sys.modules if m.startswith('cove.handlers')"
            " or m == 'cove.cli.isolation'))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(ROOT)!r}); {code}"], capture_output=True, text=True).stdout
    assert out.strip().endswith("[]"), out
