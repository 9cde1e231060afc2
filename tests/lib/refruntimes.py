"""The reference runtimes the differential tests compare with: Debian's runc and crun.

crun 1.8 refuses this host's hybrid cgroup layout ("cgroups in hybrid mode not
supported"), so it runs through a wrapper that gives each call a private mount
namespace without the cgroup2 mount, as bench/lifecycle does. crun 1.8 also refuses
configs newer than 1.0.x: the tests that run it set `ociVersion` to 1.0.2.
"""

from __future__ import annotations

import os
import shutil

from tests.lib.runtime import Env, Runtime

RUNC = shutil.which("runc")
CRUN = shutil.which("crun")
CRUN_OCI_VERSION = "1.0.2"


def crun(env: Env) -> Runtime:
    """crun with its own state root under the test's temp dir."""
    assert CRUN
    wrapper = env.tmp / "crun-wrapper"
    if not wrapper.exists():
        umount = ("umount /sys/fs/cgroup/unified 2>/dev/null; "
                  if os.path.ismount("/sys/fs/cgroup/unified") else "")
        wrapper.write_text("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                           f"'{umount}exec \"$0\" \"$@\"' {CRUN} \"$@\"\n")
        wrapper.chmod(0o755)
    return Runtime(str(wrapper), env.tmp / "crun-state")


def runc(env: Env) -> Runtime:
    assert RUNC
    return Runtime(RUNC, env.tmp / "runc-state")
