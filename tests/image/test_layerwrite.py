"""The one layer writer (cove.image.layerwrite) behind build steps, `cove commit` and
`cove cp`/`export`: an overlay upper directory as an OCI layer (whiteouts, opaque
directories, hard links, devices, FIFOs, kept and dropped xattrs), read back by the
image layer's own unpacker."""

from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path

import pytest

from cove.image import layers
from cove.image.layerwrite import LayerWriter, walk_upper, write_upper

CAP = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)   # cap_net_bind_service=ep


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("whiteouts are 0:0 devices and trusted.* xattrs: needs root")
    u = tmp_path / "upper"
    (u / "etc" / "gone-dir").mkdir(parents=True)
    (u / "opq").mkdir()
    os.setxattr(u / "opq", layers.OPAQUE_XATTR, b"y")
    os.setxattr(u / "etc", "trusted.overlay.impure", b"y")      # overlayfs's: dropped
    (u / "opq" / "new").write_text("n")
    os.mknod(u / "etc" / "passwd", 0o600 | 0o020000, os.makedev(0, 0))  # deleted
    (u / "bin").mkdir()
    (u / "bin" / "tool").write_bytes(b"\x7fELF")
    os.chown(u / "bin" / "tool", 12, 34)           # (a chown clears setuid: first)
    os.chmod(u / "bin" / "tool", 0o4755)
    os.setxattr(u / "bin" / "tool", "security.capability", CAP)
    os.setxattr(u / "bin" / "tool", "user.note", b"hi")
    os.link(u / "bin" / "tool", u / "bin" / "tool2")
    os.symlink("tool", u / "bin" / "link")
    os.mkfifo(u / "fifo")
    os.mknod(u / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (u / "proc").mkdir()
    return u


def test_upper_as_a_layer(upper: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "layer.tar")
    n = write_upper(str(upper), out, walk_upper(str(upper), {"proc"}))
    with tarfile.open(out) as tf:
        m = {x.name: x for x in tf.getmembers()}
    assert n == len(m) - 1                    # the opaque marker is not an entry of its own
    assert "proc" not in m
    assert m["etc/.wh.passwd"].isreg() and m["etc/.wh.passwd"].size == 0
    assert "opq/.wh..wh..opq" in m and "opq/new" in m
    assert not any(k.startswith("SCHILY.xattr.trusted") for k in m["etc"].pax_headers)
    tool = m["bin/tool"]
    assert (tool.uid, tool.gid, tool.mode, tool.uname) == (12, 34, 0o4755, "")
    assert tool.pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAP
    assert tool.pax_headers["SCHILY.xattr.user.note"] == "hi"
    assert m["bin/tool2"].islnk() and m["bin/tool2"].linkname == "bin/tool"
    assert m["bin/link"].issym() and m["bin/link"].linkname == "tool"
    assert m["fifo"].isfifo()
    assert m["null"].ischr() and (m["null"].devmajor, m["null"].devminor) == (1, 3)
    # the image layer's unpacker reads it back: whiteouts, opaque dir, capabilities
    with open(out, "rb") as f:
        _, wh = layers.unpack(f, "none", str(tmp_path / "snap"))
    fs = tmp_path / "snap" / "fs"
    assert "etc/passwd" in wh.whiteouts and "opq" in wh.opaque
    assert os.getxattr(fs / "bin" / "tool", "security.capability") == CAP
    assert os.stat(fs / "bin" / "tool").st_ino == os.stat(fs / "bin" / "tool2").st_ino


def test_plain_archive_keeps_devices_as_they_are(upper: Path, tmp_path: Path) -> None:
    """Outside an overlay (cp, export) a 0:0 device is a device and no xattr means
    opaque."""
    out = tmp_path / "plain.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        w = LayerWriter(tf)
        for rel, st in walk_upper(str(upper)):
            w.add(rel, st, str(upper / rel))
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        assert tf.getmember("etc/passwd").ischr()
    assert "opq/.wh..wh..opq" not in names and "etc/.wh.passwd" not in names
