"""The security tests' fixture: a static `probe` binary (tests/security/probe.c: one
attack step per sub-command) to put into bundles (tests/lib/security.py's `bundle`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the probe binary")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run([cc, "-static", "-O2", "-o", str(out), str(HERE / "probe.c")], check=True)
    return out
