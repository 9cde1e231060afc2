"""`cove build` as an ordinary user, as `buildah bud` rootless: the build runs in a user
namespace mapping container uid 0 to the user and 1.. to the user's /etc/subuid and
/etc/subgid ranges, each step on an overlay mounted there, RUN through `cove-runtime
--rootless true`; the store is the user's own (~/.local/share/cove).

The user is made per test by tests/security/test_rootless.py's `user` fixture (useradd,
its subordinate ranges, removed afterwards with /etc/subuid and /etc/subgid restored).
The image a rootless build makes must have the very layers (names, types, modes, owners,
link targets, contents) a root build of the same Dockerfile makes, and the same tree as
`buildah bud` run by that user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cove.image import userns
from cove.image.store import Store
from tests.lib.build import Cove, tree, write
from tests.lib.host import mounts_under
from tests.lib.paths import ROOT, RUNTIME
from tests.lib.rootless import User
from tests.lib.runtime import Env

PY = str(ROOT / ".venv" / "bin" / "python")

DOCKERFILE = """\
FROM busybox AS tools
RUN mkdir /out && echo built > /out/b && chown 1234:4321 /out/b && chmod 604 /out/b
FROM busybox
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && \\
    echo 'app:x:1000:' >> /etc/group && mkdir -p /home/app && chown app:app /home/app
COPY --chown=app:app a.txt /srv/a.txt
COPY --chown=2000:3000 d/ /srv/d/
COPY --chmod=0750 tool /usr/local/bin/tool
COPY --from=tools /out/ /srv/out/
RUN mkdir -p /data && chown 1000:1000 /data && chmod 2750 /data && \\
    touch /data/f && chown 65000:65001 /data/f && chmod 4711 /data/f && \\
    rm /bin/vi && ln -s busybox /bin/vi2 && mkfifo /data/p && \\
    rm -r /srv/d && mkdir /srv/d && echo new > /srv/d/new
USER app
WORKDIR /home/app
RUN test ! -e /bin/vi && test ! -e /srv/d/x && test -e /srv/d/new && \
    id -u > uid && touch owned && mkdir sub && chmod 700 sub
"""


def _ctx(base: Path, owner: User | None) -> Path:
    ctx = write(base, {"Dockerfile": DOCKERFILE, "a.txt": "hello\n", "d/x": "x",
                       "d/sub/y": "y", "tool": "#!/bin/sh\necho tool\n"})
    os.chmod(ctx / "tool", 0o644)
    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(base):
            for n in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, n), owner.uid, owner.gid)
        os.chown(base, owner.uid, owner.gid)
    return ctx


def _cove(u: User, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return u.run(["env", f"COVE_RUNTIME={RUNTIME}", f"PYTHONPATH={ROOT}", PY, "-m",
                  "cove.cli.main", *args], timeout=timeout)


def _layers(store: Store, ref: str) -> list[list[tuple[Any, ...]]]:
    """Each layer's members (name, type, mode, uid, gid, link, content digest, xattrs),
    times left out; bottom first."""
    img = store.image(ref)
    out = []
    for d in img.manifest.layers:
        rows = []
        with store.open_blob(d.digest) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
            for m in tf:
                x = tf.extractfile(m) if m.isreg() else None
                rows.append((m.name, m.type, oct(m.mode), m.uid, m.gid, m.linkname,
                             hashlib.sha256(x.read()).hexdigest() if x else "",
                             sorted(k for k in m.pax_headers if "xattr" in k)))
        out.append(sorted(rows))
    return out


def _mask(created_by: str) -> str:
    import re
    return re.sub(r"(COPY file:)[0-9a-f]{64}( in /srv/out/)", r"\1...\2", created_by)


def _user_store(u: User) -> Store:
    return Store(str(u.home / ".local" / "share" / "cove"))


def _skip_unless_usable() -> None:
    if any((os.stat(p).st_mode & 0o005) != 0o005 for p in (ROOT, *ROOT.parents)):
        pytest.skip("the checkout is not readable by other users")
    if not userns.helper("newuidmap") or not userns.helper("newgidmap"):
        pytest.skip("needs newuidmap/newgidmap (the uidmap package)")


def _no_leftovers(u: User) -> None:
    st = _user_store(u)
    cdir = Path(st.container_dir)
    assert not (cdir.exists() and [n for n in os.listdir(cdir) if n.startswith("build-")])
    rt = Path(st.root) / "build-runtime"
    assert not [s for s in (os.listdir(rt) if rt.is_dir() else []) if s != "seccomp-cache"]
    assert mounts_under(str(u.home)) == []


def test_rootless_build_same_layers_as_root(cove: Cove, user: User,
                                            env: Env) -> None:
    """A multi-stage build with RUN, COPY --chown/--chmod/--from, deletions, an opaque directory,
    setuid and setgid modes, a FIFO, USER: the user's image has the layers a root build
    of the same Dockerfile has (owners as in the container: 0, 1000, 2000:3000,
    65000:65001, never the host's ids); a rebuild is all cached and gives the same id;
    the image runs under the user's `cove run`."""
    _skip_unless_usable()
    u = user
    r = _cove(u, "build", "-t", "rl:1", str(_ctx(u.home / "ctx", u)))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Successfully tagged docker.io/library/rl:1" in r.stdout
    assert "uid=" not in r.stderr and r.stderr == ""
    cove("build", "-t", "rl:1", str(_ctx(env.tmp / "ctx", None)))
    ours, root = _user_store(u), cove.store()
    n_base = len(root.image("busybox").manifest.layers)
    got = _layers(ours, "rl:1")[n_base:]
    want = _layers(root, "rl:1")[n_base:]
    assert len(got) == 7
    assert got == want
    flat = {row[0]: row for layer in got for row in layer}
    assert flat["srv/a.txt"][3:5] == (1000, 1000)
    assert flat["srv/d/x"][3:5] == (2000, 3000)
    assert flat["data/f"][2:5] == (oct(0o4711), 65000, 65001)
    assert flat["data"][2:5] == (oct(0o2750), 1000, 1000)
    assert flat["home/app/owned"][3:5] == (1000, 1000)
    assert flat["srv/out/b"][2:5] == (oct(0o604), 1234, 4321)
    assert "bin/.wh.vi" in flat and "srv/d/.wh..wh..opq" in flat
    assert not any(u.uid in row[3:5] or row[3] >= 100000 for row in flat.values())
    # the config and history are the root build's too
    cfg = [json.loads(s.image("rl:1").config_raw) for s in (ours, root)]
    assert cfg[0]["config"] == cfg[1]["config"]
    # (COPY --from's history names the source stage's cache key, which chains the base
    # image's digest: each store made its own busybox)
    assert [_mask(h["created_by"]) for h in cfg[0]["history"]] == \
        [_mask(h["created_by"]) for h in cfg[1]["history"]]
    # cached rebuild: the same image
    first = ours.resolve("rl:1")
    r = _cove(u, "build", "-t", "rl:1", str(u.home / "ctx"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" ---> CACHED") == 10
    assert _user_store(u).resolve("rl:1") == first
    # the user's `cove run` sees the owners the build gave
    r = _cove(u, "run", "--rm", "--network", "none", "rl:1", "sh", "-c",
              "cat uid; stat -c '%n %u:%g %a' /data /data/f /srv/a.txt owned "
              "/usr/local/bin/tool")
    _cove(u, "supervisor", "stop")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["1000", "/data 1000:1000 2750", "/data/f 65000:65001 4711",
                                    "/srv/a.txt 1000:1000 644", "owned 1000:1000 644",
                                    "/usr/local/bin/tool 0:0 750", ""]
    # a bridge network needs root's bridge: one line
    r = _cove(u, "build", "--network", "bridge", str(u.home / "ctx"))
    assert (r.returncode, r.stderr) == (1, "cove: --network bridge: rootless: a build's "
                                           "bridge network needs root; use none or host\n")
    _no_leftovers(u)


def test_rootless_build_same_tree_as_rootless_buildah(user: User, env: Env,
                                                      tmp_path: Path) -> None:
    """`buildah bud` run by the same user (vfs storage under its home, runc, no
    network) gives the same unpacked tree as the user's `cove build`."""
    _skip_unless_usable()
    if shutil.which("buildah") is None or shutil.which("runc") is None:
        pytest.skip("buildah or runc not installed")
    u = user
    ctx = _ctx(u.home / "ctx", u)
    r = _cove(u, "build", "-t", "localhost/rl:1", str(ctx))
    assert r.returncode == 0, r.stderr
    bb = u.home / "busybox.tar"
    out = u.home / "bud.tar"
    ours_tar = u.home / "ours.tar"
    for args in (["save", "-o", str(bb), "busybox"], ["save", "-o", str(ours_tar),
                                                      "localhost/rl:1"]):
        r = _cove(u, *args)
        assert r.returncode == 0, r.stderr
    (u.home / "registries.conf").write_text("unqualified-search-registries = []\n")
    (u.home / "containers.conf").write_text('[engine]\ncgroup_manager = "cgroupfs"\n'
                                            'events_logger = "none"\n')
    bud = ["env", f"CONTAINERS_REGISTRIES_CONF={u.home}/registries.conf",
           f"CONTAINERS_CONF={u.home}/containers.conf", "buildah", "--root",
           f"{u.home}/bstore", "--runroot", f"{u.xdg}/brun", "--storage-driver", "vfs"]
    try:
        for args in (["pull", "-q", f"docker-archive:{bb}"],
                     ["tag", "docker.io/library/busybox:latest", "busybox"],
                     ["bud", "-q", "--runtime", shutil.which("runc") or "runc", "--network",
                      "none", "--isolation", "oci", "-t", "localhost/rl", str(ctx)],
                     ["push", "-q", "localhost/rl", f"oci-archive:{out}"]):
            r = u.run([*bud, *args], timeout=300)
            if r.returncode != 0 and args[0] == "tag":
                continue  # buildah already names it so
            if r.returncode != 0:
                pytest.skip(f"buildah {args[0]} as an ordinary user fails here: "
                            f"{r.stderr.strip().splitlines()[-1:]}")
        from cove.image.transfer import load
        theirs, mine = Store(str(tmp_path / "theirs")), Store(str(tmp_path / "mine"))
        load(theirs, str(out), "localhost/rl:buildah")
        load(mine, str(ours_tar), "localhost/rl:cove")
        t_tree = tree(theirs, "localhost/rl:buildah", tmp_path / "t-tree")
        o_tree = tree(mine, "localhost/rl:cove", tmp_path / "o-tree")
        assert {"srv/a.txt", "data/f", "home/app/owned", "srv/d/new", "srv/out/b"} <= \
            set(o_tree)
        # buildah leaves the mount point /run/secrets (and its parents) in its layer
        extra = sorted(set(t_tree) - set(o_tree))
        assert sorted(set(o_tree) - set(t_tree)) == []
        assert all(p.startswith("run") for p in extra), extra
        differ = sorted(p for p in set(o_tree) & set(t_tree) if o_tree[p] != t_tree[p])
        # buildah gives a directory COPY --chown makes above the destination (/srv) the
        # --chown owner; Cove, as BuildKit, makes it root's (a root build too: not a
        # rootless matter)
        assert [(p, o_tree[p][2:4], t_tree[p][2:4]) for p in differ] == \
            [("srv", (0, 0), (1000, 1000))]
    finally:
        u.run([*bud, "rmi", "--all", "--force"], timeout=120)
        u.run(["buildah", "unshare", "rm", "-rf", f"{u.home}/bstore"], timeout=120)
    _no_leftovers(u)


def test_rootless_ctrl_c_leaves_nothing(user: User, env: Env) -> None:
    """SIGINT to the user's `cove build` while a RUN runs: exit 130, the step's
    container killed, its directory and runtime state gone, nothing tagged, no process
    of the user left (the fixture checks that too)."""
    import signal
    import time
    _skip_unless_usable()
    u = user
    ctx = write(u.home / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started; sleep 987\n"})
    os.chown(ctx, u.uid, u.gid)
    p = subprocess.Popen(["setpriv", "--reuid", str(u.uid), "--regid", str(u.gid),
                          "--init-groups", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                          f"HOME={u.home}", f"XDG_RUNTIME_DIR={u.xdg}",
                          f"COVE_RUNTIME={RUNTIME}", f"PYTHONPATH={ROOT}", PY, "-m",
                          "cove.cli.main", "build", "-t", "interrupted", str(ctx)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=str(u.home))
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 60
        for line in p.stdout:
            if line.strip() == "started" or time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 987" not in ps
    r = _cove(u, "images")
    assert "interrupted" not in r.stdout
    _no_leftovers(u)


STREAM = """\
import io, json, sys, tarfile
from cove.image.build.dockerapi import options_from_query, stream
from cove.image.store import Store
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tf:
    data = b"FROM busybox\\nARG X\\nRUN echo hello-$X && id -u\\n"
    ti = tarfile.TarInfo("Dockerfile")
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))
buf.seek(0)
opts = options_from_query({"t": "api:1", "buildargs": json.dumps({"X": "there"})}, buf)
for msg in stream(Store(sys.argv[1]), opts):
    print(json.dumps(msg), flush=True)
"""


def test_rootless_build_through_the_api_stream(user: User, env: Env) -> None:
    """POST /build's stream (cove.image.build.dockerapi, as `cove serve` runs it: the
    build in a worker thread) as the user: the RUN's output comes back line by line
    from the build's user namespace, then the image id, and the image is stored."""
    _skip_unless_usable()
    u = user
    # (the path only: a Store made here, by root, would make its directories root's)
    root = str(u.home / ".local" / "share" / "cove")
    r = u.run(["env", f"COVE_RUNTIME={RUNTIME}", f"PYTHONPATH={ROOT}", PY, "-c", STREAM,
               root], timeout=300)
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(x) for x in r.stdout.splitlines()]
    lines = [m["stream"] for m in msgs if "stream" in m]
    assert "hello-there\n" in lines and "0\n" in lines, msgs
    assert lines[0].startswith("Step 1/3 : FROM busybox")
    ids = [m["aux"]["ID"] for m in msgs if "aux" in m]
    assert ids and _user_store(u).image("api:1").digest
    assert json.loads(_user_store(u).image("api:1").config_raw)["rootfs"]["diff_ids"]
    _no_leftovers(u)


def test_user_without_subordinate_ids_one_line(tmp_path: Path) -> None:
    """No /etc/subuid range (nobody): one line naming the fix, nothing made."""
    import tempfile
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to become another user (setpriv)")
    top = Path(tempfile.mkdtemp(prefix="cove-rootless-build-"))   # (tmp_path is 0700)
    try:
        top.chmod(0o777)
        ctx = write(top / "ctx", {"Dockerfile": "FROM busybox\nRUN true\n"})
        ctx.chmod(0o755)
        root = top / "root"
        env = {**os.environ, "HOME": str(top), "COVE_RUNTIME": RUNTIME,
               "PYTHONPATH": str(ROOT)}
        r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                            "--clear-groups", sys.executable, "-m", "cove.cli.main",
                            "--root", str(root), "build", str(ctx)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1
        assert r.stderr.startswith("cove: rootless build: user nobody has no subordinate "
                                   "ids in /etc/subuid and /etc/subgid")
        assert len(r.stderr.splitlines()) == 1
        assert not (root / "containers").exists() or not os.listdir(root / "containers")
        assert mounts_under(str(top)) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)
