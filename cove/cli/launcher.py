"""Write fast launchers for `cove-runtime` and `cove` into a bin directory.

pip's generated console scripts import `re` and go through site; these run the
interpreter with -I -S (isolated, no site) and put Cove's own directory on sys.path
(and, for `cove`, the venv's site-packages), which keeps `cove-runtime`'s start-up at
the bare interpreter's plus its own imports.

`cove-runtime` itself is the native front (cove/runtime/front.c: the short calls an
engine makes most, without an interpreter), compiled here with the path of the Python
runtime's launcher, `cove-runtime.py`, which it runs for everything else. Where no C
compiler is found (or it fails), `cove-runtime` is the Python launcher, as before.
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


def compile_front(src: str, out: str, launcher: str) -> bool:
    """cove/runtime/front.c built into `out` (a static binary: no dynamic loader at
    start; dynamic where static glibc is missing), running `launcher` for what it does
    not do. False where it cannot be built."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or '"' in launcher or "\\" in launcher:
        return False
    for extra in (["-static"], []):
        cmd = [cc, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", *extra,
               f'-DCOVE_PY_LAUNCHER="{launcher}"', "-o", out,
               os.path.join(src, "cove", "runtime", "front.c")]
        if subprocess.run(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            return True
    return False


def write(bindir: str, python: str = sys.executable) -> list[str]:
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    written = []
    bindir = os.path.abspath(bindir)  # compiled into the front
    site = _site_dirs(python)
    for name, module, paths in (("cove-runtime", "cove.cli.runtime", [src]),
                                ("cove-runtime-vm", "cove.cli.runtime_vm", [src]),
                                ("cove-runtime-gvisor", "cove.cli.runtime_gvisor", [src]),
                                ("cove", "cove.cli.main", [src, *site])):
        path = os.path.join(bindir, name)
        template = _TEMPLATE
        if name == "cove-runtime":
            template = _RUNTIME_TEMPLATE
            front = path
            path += ".py"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(template.format(python=python, paths=paths, module=module))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
        if name == "cove-runtime":
            tmp = front + ".tmp"
            if compile_front(src, tmp, path):
                os.chmod(tmp, 0o755)
            else:  # no compiler: the Python launcher is cove-runtime itself
                with open(path, "rb") as f, open(tmp, "wb") as g:
                    g.write(f.read())
                os.chmod(tmp, 0o755)
            os.replace(tmp, front)
            written.append(front)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(sys.executable)):
        print(p)
