"""`cove build`'s secrets (`--secret` + `RUN --mount=type=secret`), `--network
bridge` (only inside a network namespace the test makes), ADD of bzip2/xz/zstd tars,
and file capabilities (`security.capability`) kept in layers and seen in a container."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.lib.build import Cove, write
from tests.lib.paths import ROOT, RUNTIME

SECRET = b"s3cr3t-t0ken-8d1f"
CAP_NET_BIND_SERVICE = 10


def _grep_tree(root: str, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            p = os.path.join(dirpath, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                if needle in f.read():
                    hits.append(p)
    return hits


def test_secret_is_read_by_run_and_kept_out_of_the_image(cove: Cove, tmp_path: Path
                                                         ) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok echo \"got $(cat /run/secrets/tok)\" && "
        "stat -c '%u:%g %a' /run/secrets/tok && echo x > /made\n"
        "RUN --mount=type=secret,id=tok,target=/etc/app/key,uid=1,gid=1,mode=0440 "
        "stat -c '%u:%g %a' /etc/app/key && ! echo no > /etc/app/key\n"
        "RUN --mount=type=secret,id=absent cat /run/secrets/absent || echo skipped\n")})
    src = tmp_path / "tok.txt"
    src.write_bytes(SECRET)
    os.chmod(src, 0o600)
    r = cove("build", "-t", "sec", "--secret", f"id=tok,src={src}", str(ctx))
    assert f"got {SECRET.decode()}" in r.stdout
    assert "0:0 400" in r.stdout and "1:1 440" in r.stdout and "skipped" in r.stdout
    layers = cove.layer_members("sec")
    assert set(layers[1]) == {"made"}         # no /run, /run/secrets or the file
    assert set(layers[2]) == set()            # nor /etc/app, /etc/app/key
    cfg = json.dumps(cove.config("sec"))
    assert SECRET.decode() not in cfg and "--mount" not in cfg
    assert _grep_tree(cove.root, SECRET) == []   # not in a blob, cache entry or snapshot
    # a required secret that is not given: one line, nothing tagged
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=k,required "
                                    "true\n")
    r = cove("build", "-t", "nope", str(ctx), check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("cove: Dockerfile:2: RUN --mount=type=secret,id=k: secret "
                               "not given")
    r = cove("build", "--secret", "id=x,src=/nonexistent/f", str(ctx), check=False)
    assert r.stderr == "cove: --secret id=x,src=/nonexistent/f: /nonexistent/f: no such " \
                       "file\n"
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=cache,target=/c true\n")
    r = cove("build", str(ctx), check=False)
    assert "type=cache is not supported" in r.stderr and r.returncode == 1


def test_add_unpacks_bzip2_xz_zstd_and_gzip(cove: Cove, tmp_path: Path) -> None:
    import zstandard

    def tar(mode: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
            ti = tarfile.TarInfo(f"d/{mode[2:] or 'plain'}")
            ti.size = 2
            tf.addfile(ti, io.BytesIO(b"ok"))
        return buf.getvalue()
    files: dict[str, str | bytes] = {"a.tar.bz2": tar("w:bz2"), "a.tar.xz": tar("w:xz"),
                                     "a.tgz": tar("w:gz"), "a.tar": tar("w"),
                                     "a.tar.zst": zstandard.ZstdCompressor().compress(
                                         tar("w")), "notatar.xz": b"\xfd7zXZ\x00junk"}
    df = "FROM busybox\n" + "".join(f"ADD {n} /x/\n" for n in files)
    cove("build", "-t", "adds", str(write(tmp_path / "ctx", {**files, "Dockerfile": df})))
    layers = cove.layer_members("adds")
    assert "x/d/bz2" in layers[1] and "x/d/xz" in layers[2] and "x/d/gz" in layers[3]
    assert "x/d/plain" in layers[4] and "x/d/plain" in layers[5]
    assert "x/notatar.xz" in layers[6]        # not a tar: copied as it is
    assert cove.layer_file("adds", 1, "x/d/bz2") == b"ok"


def _vfs_cap(cap: int) -> bytes:
    """struct vfs_cap_data, revision 2, effective: `cap` permitted and effective."""
    return struct.pack("<IIIII", 0x02000000 | 1, 1 << cap, 0, 0, 0)


def test_file_capabilities_kept_in_layers(cove: Cove, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    # busybox-static (the image's own binary) as `cat`: busybox runs the applet its
    # name says
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY capbox /capbin/cat\n"
                              "RUN chmod 755 /capbin/cat\nUSER nobody\n"})
    shutil.copy("/bin/busybox", ctx / "capbox")
    want = _vfs_cap(CAP_NET_BIND_SERVICE)
    os.setxattr(ctx / "capbox", "security.capability", want)
    cove("build", "-t", "caps", str(ctx))
    layers = cove.layer_members("caps")
    m = layers[1]["capbin/cat"]
    got = m.pax_headers["SCHILY.xattr.security.capability"]
    assert got.encode("utf-8", "surrogateescape") == want
    # chmod in a RUN copies the file up: its capabilities go with it into that layer
    got2 = layers[2]["capbin/cat"].pax_headers["SCHILY.xattr.security.capability"]
    assert got2.encode("utf-8", "surrogateescape") == want
    # a container (as nobody; cove's default no_new_privs off, as docker's) that runs
    # the file gets the capability
    out = cove("run", "--rm", "--network", "none", "--security-opt",
               "no-new-privileges=false", "caps", "/capbin/cat", "/proc/self/status").stdout
    eff = next(x for x in out.splitlines() if x.startswith("CapEff:"))
    assert int(eff.split()[1], 16) == 1 << CAP_NET_BIND_SERVICE
    out = cove("run", "--rm", "--network", "none", "--security-opt",
               "no-new-privileges=false", "caps", "cat", "/proc/self/status").stdout
    assert "CapEff:\t0000000000000000" in out    # the same, without the xattr


def test_cp_and_commit_keep_file_capabilities(cove: Cove, tmp_path: Path) -> None:
    """The same writer under `cove cp` (both ways) and `cove commit`: a file's
    capabilities go into the archive, back onto the file, and into the new layer."""
    want = _vfs_cap(CAP_NET_BIND_SERVICE)
    host = tmp_path / "tool"
    host.write_bytes(b"#!/bin/sh\n")
    os.chmod(host, 0o755)
    os.setxattr(host, "security.capability", want)
    cove("create", "--name", "c1", "--network", "none", "busybox", "true")
    cove("cp", str(host), "c1:/tool")
    r = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "cp",
                        "c1:/tool", "-"], capture_output=True, timeout=60,
                       env={**os.environ, "COVE_RUNTIME": RUNTIME, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        hdr = tf.getmember("tool").pax_headers["SCHILY.xattr.security.capability"]
    assert hdr.encode("utf-8", "surrogateescape") == want
    cove("commit", "c1", "committed")
    top = cove.layer_members("committed")[-1]["tool"]
    assert top.pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == want


def test_network_bridge_in_a_private_netns(cove: Cove, tmp_path: Path) -> None:
    """The build's RUN steps on the default bridge network: an address from its subnet
    and the gateway reachable. The whole build runs in a network namespace the test
    makes (its bridge, veths and nft tables die with it)."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\nRUN ip -4 -o addr show eth0 && ping -c1 -W3 "
        "$(ip route | awk '/^default/ {print $3}') >/dev/null && echo gw-ok\n"
        "RUN --network=none ip -o link | grep -c ': ' \n")})
    env = {**os.environ, "COVE_RUNTIME": RUNTIME, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "cove.cli.main",
                        "--root", cove.root, "build", "-t", "br", "--network", "bridge",
                        str(ctx)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "eth0    inet 10.88.0." in r.stdout and "gw-ok" in r.stdout
    assert "\n1\n" in r.stdout       # RUN --network=none: loopback only
    with open(os.path.join(cove.root, "networks", "bridge.json")) as f:
        assert json.load(f)["Containers"] == {}
    assert not [n for n in os.listdir(os.path.join(cove.root, "containers"))
                if n.startswith("buildnet-")]


def test_bridge_refused_without_the_engine(tmp_path: Path) -> None:
    from cove.errors import CoveError
    from cove.image.build.builder import Builder, Options
    from cove.image.store import Store
    b = Builder(Store(str(tmp_path / "r")), Options(network="bridge"))
    with pytest.raises(CoveError, match="no bridge network"):
        b._netns()
