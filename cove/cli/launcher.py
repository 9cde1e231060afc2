"""Write fast launchers for `cove-runtime` and `cove` into a bin directory.

pip's generated console scripts import `re` and go through site; these run the
interpreter with -I -S (isolated, no site) and put Cove's own directory on sys.path,
which keeps `cove-runtime`'s start-up at the bare interpreter's plus its own imports.
"""

from __future__ import annotations

import os
import sys

_TEMPLATE = """#!{python} {flags}
import sys
sys.path.insert(0, {path!r})
from {module} import main
sys.exit(main())
"""


def write(bindir: str, python: str = sys.executable) -> list[str]:
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    written = []
    for name, module, flags in (("cove-runtime", "cove.cli.runtime", "-IS"),
                                ("cove-runtime-vm", "cove.cli.runtime_vm", "-IS"),
                                ("cove-runtime-gvisor", "cove.cli.runtime_gvisor", "-IS"),
                                ("cove", "cove.cli.main", "-I")):
        path = os.path.join(bindir, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(_TEMPLATE.format(python=python, flags=flags, path=src, module=module))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(sys.executable)):
        print(p)
