"""Where things are: the repository and the cove-runtime launcher the tests run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime")
REPO = str(ROOT)


def runtime_py() -> str:
    """The Python runtime's launcher (a script, for `python -X importtime` and the
    like): `cove-runtime.py` beside the native front, or cove-runtime itself where no
    front was compiled (cove/cli/launcher.py)."""
    py = RUNTIME + ".py"
    return py if os.path.exists(py) else RUNTIME


def cove_runtime() -> str:
    """The cove-runtime launcher (regenerated if missing)."""
    if not os.path.exists(RUNTIME):
        subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "cove.cli.launcher",
                        str(ROOT / ".venv" / "bin")], cwd=REPO, check=True, timeout=60)
    return RUNTIME
