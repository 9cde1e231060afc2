"""The same Dockerfile built by `buildah bud` (its own storage root under the test's
temp dir, runc for RUN, no network) and by Cove: the unpacked trees are the same
(paths, types, modes, owners, contents, link targets; not times) and so is the config
(Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Volumes, Labels)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.image.store import Store
from tests.lib.build import Cove, tree, write
from tests.lib.host import mounts_under

pytestmark = pytest.mark.peers

DOCKERFILE = """\
FROM localhost/busybox
ARG V=1
ENV APP=/app MODE=prod
WORKDIR /app
COPY a.txt link ./
COPY --chown=1:1 d/ data/
COPY --chmod=0700 tool /usr/local/bin/
ADD pack.tar /opt/
RUN echo built-$V > built.txt && rm /sbin/reboot && mkdir -p /var/x && chmod 700 /var/x
RUN rm -r /root && mkdir /root && echo 1 > /root/x
LABEL a=b c="d e"
USER daemon
EXPOSE 8080 53/udp
VOLUME /data
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "cat built.txt"]
"""


class Buildah:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir()
        conf = tmp / "containers.conf"
        conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                        f'events_logfile_path = "{tmp}/events.log"\n'
                        '[containers]\nnetns = "none"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf),
                    "CONTAINERS_REGISTRIES_CONF": str(tmp / "registries.conf"),
                    "TMPDIR": str(tmp)}
        (tmp / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.base = ["buildah", "--root", str(tmp / "storage"), "--runroot",
                     str(tmp / "run"), "--storage-driver", "overlay"]

    def __call__(self, *args: str) -> str:
        r = subprocess.run([*self.base, *args], capture_output=True, text=True,
                           env=self.env, timeout=300)
        assert r.returncode == 0, f"buildah {' '.join(args)}: {r.stderr}"
        return r.stdout

    def clean(self) -> None:
        subprocess.run([*self.base, "rm", "--all"], capture_output=True, env=self.env)
        subprocess.run([*self.base, "rmi", "--all", "--force"], capture_output=True,
                       env=self.env)
        for m in reversed(mounts_under(str(self.tmp))):
            subprocess.call(["umount", "-l", m])
        shutil.rmtree(self.tmp / "storage", ignore_errors=True)


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    if shutil.which("buildah") is None or shutil.which("runc") is None:
        pytest.skip("buildah or runc not installed (scripts/install-deps.sh)")
    b = Buildah(tmp_path / "buildah")
    yield b
    b.clean()


CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels")


def _config(store: Store, ref: str) -> dict[str, Any]:
    import json
    c = json.loads(store.image(ref).config_raw)["config"]
    c.get("Labels", {}).pop("io.buildah.version", None)
    return {k: c.get(k) for k in CONFIG_KEYS}


def _buildah_build(cove: Cove, buildah: Buildah, tmp_path: Path, ctx: Path, name: str,
                   *flags: str) -> Store:
    """`ctx` built by buildah (from cove's busybox, saved and pulled) as
    localhost/NAME, loaded into a store of its own as localhost/NAME:buildah."""
    bb = tmp_path / "busybox.tar"
    cove("save", "-o", str(bb), "localhost/busybox:latest")
    buildah("pull", "-q", f"docker-archive:{bb}")
    buildah("bud", "-q", "--runtime", shutil.which("runc") or "runc", "--network", "none",
            "--isolation", "oci", *flags, "-t", f"localhost/{name}", str(ctx))
    out = tmp_path / "buildah-image.tar"
    buildah("push", "-q", f"localhost/{name}", f"oci-archive:{out}")
    theirs = Store(str(tmp_path / "theirs"))
    from cove.image.transfer import load
    load(theirs, str(out), f"localhost/{name}:buildah")
    return theirs


def test_same_image_as_buildah(cove: Cove, buildah: Buildah, tmp_path: Path) -> None:
    import tarfile
    ctx = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "hello\n",
                                   "d/sub/x": "x", "d/y": "y", "tool": "#!/bin/sh\n"})
    os.symlink("a.txt", ctx / "link")
    (tmp_path / "pk").mkdir()
    (tmp_path / "pk" / "f").write_text("packed")
    with tarfile.open(ctx / "pack.tar", "w") as tf:
        tf.add(tmp_path / "pk", arcname="pk")
    cove("build", "-t", "interop", str(ctx))
    theirs = _buildah_build(cove, buildah, tmp_path, ctx, "interop")
    ours_tree = tree(cove.store(), "interop", tmp_path / "ours-tree")
    theirs_tree = tree(theirs, "localhost/interop:buildah", tmp_path / "theirs-tree")
    assert {"app/built.txt", "app/data/sub/x", "opt/pk/f", "root/x", "app/link"} <= \
        set(ours_tree)
    assert "sbin/reboot" not in ours_tree and len(ours_tree) > 300
    only_ours = sorted(set(ours_tree) - set(theirs_tree))
    only_theirs = sorted(set(theirs_tree) - set(ours_tree))
    differ = sorted(p for p in set(ours_tree) & set(theirs_tree)
                    if ours_tree[p] != theirs_tree[p])
    assert (only_ours, only_theirs) == ([], [])
    assert [(p, ours_tree[p], theirs_tree[p]) for p in differ] == []
    ours_cfg = _config(cove.store(), "interop")
    assert ours_cfg["Entrypoint"] == ["/bin/sh"] and ours_cfg["Labels"] == {"a": "b", "c": "d e"}
    assert ours_cfg == _config(theirs, "localhost/interop:buildah")


SECRETS_CAPS = """\
FROM localhost/busybox
COPY capbox /capbin/cat
ADD pack.tar.xz pack.tar.bz2 /opt/
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cr3t && echo ok > /ok
"""


def _cap_xattrs(store: Store, ref: str) -> list[bytes]:
    """The security.capability records of /capbin/cat in the image's layers."""
    import tarfile
    img = store.image(ref)
    out = []
    for d in img.manifest.layers:
        with store.open_blob(d.digest) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
            for m in tf:
                v = m.pax_headers.get("SCHILY.xattr.security.capability")
                if m.name.lstrip("./") == "capbin/cat" and v is not None:
                    out.append(v.encode("utf-8", "surrogateescape"))
    return out


def test_secrets_compressed_add_and_caps_as_buildah(cove: Cove, buildah: Buildah,
                                                    tmp_path: Path) -> None:
    """A RUN that reads a secret, ADD of xz and bzip2 tars and a COPY of a file with
    file capabilities: the same tree as buildah's (no /run/secrets in either), and the
    capability in both images' layers."""
    import struct
    import tarfile
    ctx = write(tmp_path / "ctx", {"Dockerfile": SECRETS_CAPS})
    shutil.copy("/bin/busybox", ctx / "capbox")
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    os.setxattr(ctx / "capbox", "security.capability", cap)
    for comp in ("xz", "bz2"):
        (tmp_path / comp).mkdir()
        (tmp_path / comp / "f").write_text(comp)
        with tarfile.open(ctx / f"pack.tar.{comp}", f"w:{comp}") as tf:  # type: ignore[call-overload]
            tf.add(tmp_path / comp, arcname=comp)
    secret = tmp_path / "tok"
    secret.write_text("s3cr3t")
    cove("build", "-t", "sc", "--secret", f"id=tok,src={secret}", str(ctx))
    theirs = _buildah_build(cove, buildah, tmp_path, ctx, "sc", "--secret",
                            f"id=tok,src={secret}")
    ours_tree = tree(cove.store(), "sc", tmp_path / "ours-tree")
    theirs_tree = tree(theirs, "localhost/sc:buildah", tmp_path / "theirs-tree")
    assert {"ok", "opt/xz/f", "opt/bz2/f", "capbin/cat"} <= set(ours_tree)
    assert not any(p.startswith("run/secrets") for p in ours_tree)
    # buildah leaves the empty mount point directory /run/secrets in its layer (it
    # makes it for its own subscription mounts too); BuildKit, and Cove, leave no trace
    assert sorted(set(ours_tree) - set(theirs_tree)) == []
    assert sorted(set(theirs_tree) - set(ours_tree)) == ["run/secrets"]
    differ = sorted(p for p in set(ours_tree) & set(theirs_tree)
                    if ours_tree[p] != theirs_tree[p])
    assert [(p, ours_tree[p], theirs_tree[p]) for p in differ] == []
    assert _cap_xattrs(cove.store(), "sc") == [cap]
    assert _cap_xattrs(theirs, "localhost/sc:buildah") == [cap]
