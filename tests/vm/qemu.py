"""Moved to cove.handlers.vm.qemu: the script runner the cgroup v2 tests boot a VM with."""

import sys

from cove.handlers.vm.qemu import (
    CONTROLLERS,
    EXIT_MARK,
    MODULES,
    Result,
    find_kernel,
    main,
    missing,
    qemu_binary,
    run,
)

__all__ = ["CONTROLLERS", "EXIT_MARK", "MODULES", "Result", "find_kernel", "main", "missing",
           "qemu_binary", "run"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
