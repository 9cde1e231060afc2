"""Write fast launchers for `cove-runtime` and `cove` into a bin directory.

pip's generated console scripts import `re` and go through site; these run the
interpreter with -I -S (isolated, no site) and put Cove's own directory on sys.path
(and, for `cove`, the venv's site-packages), which keeps `cove-runtime`'s start-up at
the bare interpreter's plus its own imports.
"""

from __future__ import annotations

import os
import sys

_TEMPLATE = """#!{python} -IS
import sys
sys.path[0:0] = {paths!r}
from {module} import main
sys.exit(main())
"""
# cove-runtime's: its modules from one cache file, no interpreter teardown
# (cove/runtime/boot.py says why).
_RUNTIME_TEMPLATE = """#!{python} -IS
import sys
sys.path[0:0] = {paths!r}
from cove.runtime.boot import main
main({module!r})
"""


def _site_dirs(python: str) -> list[str]:
    """The venv's site-packages, for `cove`'s third-party libraries (pyroute2, zstandard,
    rich): put on sys.path directly, since running `site` (and the .pth files there,
    such as pip's editable-install finder) costs ~20 ms per command."""
    import subprocess

    out = subprocess.run([python, "-c", "import sysconfig; p = sysconfig.get_paths(); "
                          "print(p['purelib']); print(p['platlib'])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return list(dict.fromkeys(out))


def write(bindir: str, python: str = sys.executable) -> list[str]:
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    written = []
    site = _site_dirs(python)
    for name, module, paths in (("cove-runtime", "cove.cli.runtime", [src]),
                                ("cove-runtime-vm", "cove.cli.runtime_vm", [src]),
                                ("cove-runtime-gvisor", "cove.cli.runtime_gvisor", [src]),
                                ("cove", "cove.cli.main", [src, *site])):
        path = os.path.join(bindir, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            template = _RUNTIME_TEMPLATE if name == "cove-runtime" else _TEMPLATE
            f.write(template.format(python=python, paths=paths, module=module))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(sys.executable)):
        print(p)
