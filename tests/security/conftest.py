"""Shared pieces of the security tests: a static `probe` binary (tests/security/probe.c:
one attack step per sub-command) put into bundles, and Debian's runc to compare with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.helpers import Bundle, Runtime

HERE = Path(__file__).resolve().parent
RUNC = shutil.which("runc")


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the probe binary")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run([cc, "-static", "-O2", "-o", str(out), str(HERE / "probe.c")], check=True)
    return out


def bundle(env: Env, probe_bin: Path, cfg: dict[str, Any], name: str = "bundle") -> Bundle:
    """A bundle with /bin/probe in its rootfs."""
    b = env.bundle(cfg, name=name)
    shutil.copy(probe_bin, b.rootfs / "bin" / "probe")
    return b


def runc(env: Env) -> Runtime:
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
