"""The engine tests' own fixture: `rl`, the `cove` of an unprivileged user in a network
namespace of the test's (tests/engine/test_rootless_engine.py, test_devices.py). Their
common fixtures (`cove`: a state root per test with the busybox image copied in from a
session store, and a check that nothing outlives a test; `netns`; `busybox_blobs`;
`user`) are tests/conftest.py's, shared with the services and checkpoint tests; the
`cove` runner and the engine's process helpers are tests/lib/engine.py's."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from cove.engine import rootless
from cove.image import userns
from tests.lib.paths import ROOT
from tests.lib.rootless import COVE, Rootless, User, mounted, slirp_pids
from tests.lib.runtime import Env
from tests.lib.wait import wait_for


@pytest.fixture
def rl(env: Env, user: User) -> Iterator[Rootless]:
    if not os.access(COVE, os.X_OK) or any(
            (os.stat(p).st_mode & 0o005) != 0o005 for p in (ROOT, *ROOT.parents)):
        pytest.skip("the checkout is not readable by other users")
    if not rootless.binary() or not userns.helper("newuidmap"):
        pytest.skip("needs slirp4netns and newuidmap/newgidmap")
    netns = f"cove-rl-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"],
                       check=True, capture_output=True)
        r = Rootless(user, netns)
        yield r
        left = r("ps", "-aq").stdout.split()
        if left:
            r("rm", "-f", *left)
        r("supervisor", "stop")  # ends the root's zygote too
        assert not left, f"containers left: {left}"
        wait_for(lambda: not slirp_pids(user), 5, "every slirp4netns gone with its container",
                 interval=0.05)
        assert mounted(f"/run/netns/{netns}"), "the host's mounts were touched"
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
