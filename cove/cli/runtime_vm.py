"""`cove-runtime-vm`: cove-runtime with the vm handler (a containerd runtime handler or a
Kubernetes RuntimeClass selects it by binary name)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from cove.cli.runtime import main as runtime_main

    return runtime_main(argv, handler="vm")


if __name__ == "__main__":
    sys.exit(main())
