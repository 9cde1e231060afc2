"""What the security tests share: bundles with the static `probe` binary
(tests/security/probe.c: one attack step per sub-command; the `probe_bin` fixture of
tests/security/conftest.py builds it) and Debian's runc to compare with."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import Bundle
from tests.lib.runtime import Env, Runtime

RUNC = shutil.which("runc")


def bundle(env: Env, probe_bin: Path, cfg: dict[str, Any], name: str = "bundle") -> Bundle:
    """A bundle with /bin/probe in its rootfs."""
    b = env.bundle(cfg, name=name)
    shutil.copy(probe_bin, b.rootfs / "bin" / "probe")
    return b


def runc(env: Env) -> Runtime:
    """runc with a state root under the test's temp dir (skips the test without it)."""
    if RUNC is None:
        pytest.skip("runc is not installed")
    return Runtime(RUNC, env.tmp / "runc-state")


def run(rt: Runtime, env: Env, b: Bundle) -> tuple[int, str, str]:
    """`run` the bundle to completion under `rt`; always deleted afterwards."""
    cid = env.id()
    try:
        p = rt("run", "--bundle", str(b.path), cid, timeout=60)
    finally:
        rt("delete", "--force", cid)
    return p.returncode, p.stdout, p.stderr
