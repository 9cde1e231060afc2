"""`cove build --network bridge`: a network namespace on the engine's default bridge
network for a build's RUN steps, as docker's classic builder gives its build
containers the default bridge.

The build (cove.image.build, which imports no engine module) asks for it through
`Options.bridge` at its first bridged RUN and gives it back at its end; every
bridged RUN of the build joins the same namespace. The namespace is a member of the
`bridge` network like a container (an address from its subnet, a veth on its
bridge, the default route through its gateway; the masquerade the network already
has), recorded under a `buildnet-*` name so that addresses never collide with
containers', and removed, veth, record and nsfs mount, when the build ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator

from cove.engine import netrecords as R
from cove.engine import network as N
from cove.engine import state as S
from cove.errors import CoveError


@contextlib.contextmanager
def bridge_netns(root: str) -> Iterator[str]:
    """The path of a network namespace plugged into `root`'s default bridge network
    (made when missing), for the life of the `with`."""
    if os.geteuid() != 0:
        raise CoveError("--network bridge", "needs root (a rootless build has none or "
                                            "host)")
    paths = S.Paths(root)
    me = os.getpid()
    name = "buildnet-" + secrets.token_hex(6)
    cdir = paths.cdir(name)
    os.makedirs(cdir, 0o700)
    try:
        if R.load(paths, R.DEFAULT) is None:
            with contextlib.suppress(CoveError):
                N.create(root, R.DEFAULT)
        nsfile = R.netns_path(paths, name)
        with open(nsfile, "w"):
            pass
        subprocess.run(["unshare", f"--net={nsfile}", "true"], check=True)
        with R.locked(paths):
            n = R.load(paths, R.DEFAULT)
            if n is None:
                raise CoveError(f"network {R.DEFAULT}", "no such network")
            ip = R.free_ip(n)
            host_if = "cv" + secrets.token_hex(5)
            # pyroute2 forks a helper into the namespace and ends it with SIGTERM:
            # it must die of it, not raise the build's Ctrl-C in a copy of this process
            main = threading.current_thread() is threading.main_thread()
            old = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main else None
            try:
                mac = N.plug(paths, n, nsfile, host_if, "eth0", ip, primary=True)
            finally:
                if main:
                    signal.signal(signal.SIGTERM, old)
            plen = n["Subnet"].partition("/")[2]
            n["Containers"][name] = {"IPv4Address": f"{ip}/{plen}", "MacAddress": mac,
                                     "Veth": host_if, "Hostname": name}
            R.save(paths, n)
        yield nsfile
    finally:
        # (pyroute2's NetNS forks a helper: a failure in it must not clean up here)
        if os.getpid() == me:
            N.detach(paths, name)
            shutil.rmtree(cdir, ignore_errors=True)
