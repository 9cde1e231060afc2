"""Fixtures that tests in more than one directory use: a runtime test's world (`env`),
an engine state root with its `cove` runner (`cove`, from the session's `busybox_blobs`)
and a network namespace of the test's own (`netns`), a busybox docker-archive tar
(`image_tar`), a plain registry (`plain`) and podman and dockerd that trust it
(`podman`, `docker`), an unprivileged user of the test's own (`user`); and the end of
every test's engine processes. The helpers they use are in tests/lib (a test imports
those, never a conftest)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lib.daemons import Docker, Podman
from tests.lib.engine import Cove, engine_leftovers
from tests.lib.host import leftovers, mounts_under
from tests.lib.paths import cove_runtime
from tests.lib.peers import docker_archive, finish, need
from tests.lib.rootless import (
    SUBID_FILES,
    User,
    next_free_subid,
    owner_uid,
    subid_range,
    user_leftovers,
)
from tests.lib.runtime import Env
from tests.lib.wait import WaitTimeout, wait_for

if TYPE_CHECKING:  # imported where used: a broken image module fails only its tests
    from cove.image.store import Store
    from tests.lib.images import RegistryServer


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cove_runtime()
    # User-namespaced containers reach their rootfs as an unmapped host uid: let every
    # directory above it be searched (pytest makes its base 0700).
    for d in (tmp_path, *tmp_path.parents):
        if str(d) in ("/", "/tmp"):
            break
        d.chmod(d.stat().st_mode | 0o111)
    e = Env(tmp_path / "w")
    e.tmp.mkdir()
    yield e
    left = leftovers(e.tmp, e.ids)
    e.cleanup()
    assert not left, f"left behind: {left}"


def _engine_processes(tmp: str) -> dict[int, str]:
    """The keepers and monitors of state roots under `tmp` (pid -> name)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in ("cove-zygote", "cove-monitor"):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tmp.encode() in f.read():
                    out[int(pid)] = comm
        except OSError:
            continue
    return out


@pytest.fixture(autouse=True)
def _monitors_end_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """`cove run` leaves its root's monitor and keeper waiting two idle minutes for the
    next run (cove/engine/monitor.py, zygote.py): a test's end with the test, as `cove
    supervisor stop` would end them (SIGTERM to the keeper, which stops the monitor;
    then SIGKILL for any left, monitors first: each restarts the other)."""
    tmp = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames \
        else ""
    yield
    if not tmp:
        return
    import time
    procs = _engine_processes(tmp)
    for pid, comm in procs.items():
        if comm == "cove-zygote":
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
    for _ in range(3):
        deadline = time.monotonic() + 2
        while procs and time.monotonic() < deadline:
            time.sleep(0.02)
            procs = _engine_processes(tmp)
        for pid, _comm in sorted(procs.items(), key=lambda p: p[1] != "cove-monitor"):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


# ---- the engine: a state root per test ---------------------------------------------

@pytest.fixture
def netns(tmp_path: Path) -> Iterator[str]:
    """A network namespace of the test's own, loopback up: bridges, veths, nft tables and
    per-interface sysctls made in it vanish with it (the host's stay untouched). Run
    `cove` in it as `Cove(root, ["nsenter", f"--net={netns}"])`."""
    if shutil.which("nft") is None:
        pytest.skip("nft not installed (scripts/install-deps.sh)")
    ns = str(tmp_path / "testns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True)
    yield ns
    subprocess.call(["umount", ns])


@pytest.fixture(scope="session")
def busybox_blobs(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from cove.image.builtin import ensure_busybox
    from cove.image.store import Store

    st = Store(str(tmp_path_factory.mktemp("engine-busybox")))
    ensure_busybox(st)
    return st


@pytest.fixture
def cove(tmp_path: Path, busybox_blobs: Store) -> Iterator[Cove]:
    """A state root of the test's own holding busybox, and `cove` over it; at the end,
    everything the test left running stopped, then a check that nothing outlives it: no
    monitor or supervisor of its root, no mounts under it, no runtime state."""
    for p in (tmp_path, *tmp_path.parents):
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o111)
    root = str(tmp_path / "root")
    shutil.copytree(busybox_blobs.root, root, symlinks=True)
    c = Cove(root)
    yield c
    # stop everything this test left running, then insist nothing was left
    c("supervisor", "stop", check=False)
    for name in c("ps", "-a", "-q", check=False).stdout.split():
        c("rm", "-f", name, check=False)
    c("supervisor", "stop", check=False)  # `ps` brings back one a container relied on
    left = engine_leftovers(root)
    mounts = mounts_under(root)
    rt = os.path.join(root, "runtime")
    states = [s for s in (os.listdir(rt) if os.path.isdir(rt) else [])
              if s != "seccomp-cache"]  # the runtime's shared cache, not a container
    for m in reversed(mounts):
        subprocess.call(["umount", "-l", m])
    assert not left, f"processes left: {left}"
    assert not mounts, f"mounts left: {mounts}"
    assert not states, f"runtime state left: {states}"


# ---- images and registries ----------------------------------------------------------

@pytest.fixture(scope="session")
def image_tar() -> Iterator[str]:
    """A busybox image as a docker-archive tar (built once per session), for the peers
    (tests/peers, tests/handlers) to load."""
    from cove.image.busybox import BUSYBOX, build_rootfs

    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (busybox-static)")
    d = tempfile.mkdtemp(prefix="peer-image-")
    try:
        rootfs = build_rootfs(os.path.join(d, "rootfs"))
        yield docker_archive(rootfs, os.path.join(d, "image.tar"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP docker-registry for the module (tests/image, tests/build)."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (scripts/install-deps.sh)")
    from tests.lib.images import RegistryServer

    r = RegistryServer(tmp_path_factory.mktemp("reg-plain")).start()
    yield r
    r.stop()


# ---- rootless: a user of the test's own ---------------------------------------------

@pytest.fixture
def user(env: Env) -> Iterator[User]:
    """An unprivileged user made for the test (useradd, with the /etc/subuid and
    /etc/subgid ranges useradd gives it); afterwards a check that no process of it, no
    mount and no state is left, then the user removed and /etc/subuid and /etc/subgid
    restored byte for byte."""
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser")
    name = f"cove{uuid.uuid4().hex[:10]}"
    saved = {p: p.read_bytes() if p.exists() else None for p in SUBID_FILES}
    subprocess.run(["useradd", "-m", "-U", "-s", "/bin/sh", name], check=True,
                   capture_output=True)
    try:
        # Debian's useradd gives new users a range (SUB_UID_MIN in login.defs); where it
        # does not, add one.
        for p in SUBID_FILES:
            if subid_range(p, name) == (0, 0):
                with open(p, "a") as f:
                    f.write(f"{name}:{next_free_subid(p)}:65536\n")
        home = Path(pwd.getpwnam(name).pw_dir)
        xdg = env.tmp / "xdg"
        xdg.mkdir(mode=0o700)
        u = User(name, home, xdg)
        os.chown(xdg, u.uid, u.gid)
        yield u
        left = user_leftovers(u, env)
        assert not left, f"left behind: {left}"
    finally:
        u_pids = []
        try:
            uid = pwd.getpwnam(name).pw_uid
            u_pids = [int(p) for p in os.listdir("/proc")
                      if p.isdigit() and owner_uid(p) == uid]
        except KeyError:
            pass
        for pid in u_pids:  # the test user's own processes (a failed test's containers)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        with contextlib.suppress(WaitTimeout):  # best effort: userdel says what stayed
            wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in u_pids), 5,
                     "the test user's processes gone", interval=0.05)
        subprocess.run(["userdel", "-r", name], capture_output=True)
        for p, data in saved.items():
            if data is None:
                p.unlink(missing_ok=True)
            elif p.read_bytes() != data:
                p.write_bytes(data)


# ---- peers that pull from the `plain` registry (tests/image, tests/build) ----------

@pytest.fixture(scope="module")
def podman(plain: RegistryServer) -> Iterator[Podman]:
    """podman with a private root and cove-runtime, trusting the `plain` registry (a
    module's own `podman` fixture, tests/peers', wins over this one)."""
    need("/usr/bin/podman")
    need("conmon")
    p = Podman()
    with open(p.path("registries.conf"), "a") as fh:
        fh.write(f'[[registry]]\nlocation = "{plain.host}"\ninsecure = true\n')
    try:
        p.mark_baseline()
        yield p
        p("rm", "-af", check=False)
        p("rmi", "-af", check=False)
        p("system", "reset", "-f", check=False, timeout=60)
    finally:
        finish(p)


@pytest.fixture(scope="module")
def docker(plain: RegistryServer) -> Iterator[Docker]:
    """dockerd with a private root and cove-runtime, trusting the `plain` registry (a
    module's own `docker` fixture, tests/peers', wins over this one)."""
    need("dockerd")
    need("/usr/bin/docker")
    dk = Docker()
    cfg = json.loads(Path(dk.path("daemon.json")).read_text())
    cfg["insecure-registries"] = [plain.host]     # 127.0.0.0/8 is, but say so
    Path(dk.path("daemon.json")).write_text(json.dumps(cfg))
    try:
        dk.start(["dockerd", "--config-file", dk.path("daemon.json")], ready=dk.ready,
                 env={**os.environ, "TMPDIR": dk.path("tmp")}, timeout=60)
        yield dk
        dk("rm", "-f", *dk("ps", "-aq").stdout.split(), check=False)
        dk("rmi", "-f", *dk("images", "-aq").stdout.split(), check=False)
    finally:
        finish(dk)
