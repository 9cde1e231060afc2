"""What the image tests share (tests/image; tests/engine and tests/build start a registry
too): layer tars built in memory, a registry started per test module (Debian's
docker-registry), a sample image of three layers, leftover checks, and `cove` run over
a store root of the test's."""


from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import zstandard

from cove.image.assemble import build_image
from cove.image.store import Store
from cove.oci.image import ContainerConfig, Platform
from tests.lib.paths import RUNTIME

# The htpasswd user of the TLS registry (tests/image/conftest.py's `secure` fixture).
USER, PASSWORD = "alice", "s3cret"


def entry(name: str, data: bytes | None = None, *, type: bytes = tarfile.REGTYPE,
          linkname: str = "", mode: int = 0o644, uid: int = 0, gid: int = 0,
          pax: dict[str, str] | None = None, devmajor: int = 0,
          devminor: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.linkname = linkname
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.mtime = 1_600_000_000
    ti.devmajor, ti.devminor = devmajor, devminor
    if pax:
        ti.pax_headers = dict(pax)
    if data is not None:
        ti.size = len(data)
    return ti, data


def d(name: str, mode: int = 0o755, **kw: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, type=tarfile.DIRTYPE, mode=mode, **kw)


def f(name: str, data: bytes = b"x", **kw: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, data, **kw)


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, type=tarfile.LNKTYPE, linkname=target)


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]],
              how: str = "none") -> str:
    path.write_bytes(compress(tar_bytes(entries), how))
    return str(path)


def sample_image(tmp: Path, st: Store, name: str, tag: str = "x",
                 platform: Platform | None = None) -> str:
    """An image of three layers (gzip, zstd, none; the last one whites out a file of
    the first) named `name` in `st`; its digest."""
    l1 = write_tar(tmp / f"{tag}-1.tar", [d("etc"), f("etc/os", tag.encode()),
                                          sym("link", "/etc/os")], "gzip")
    l2 = write_tar(tmp / f"{tag}-2.tar", [f("data/big", os.urandom(300_000))], "zstd")
    l3 = write_tar(tmp / f"{tag}-3.tar", [f("etc/.wh.os", b"")])
    cfg = ContainerConfig(cmd=["sh"], env=["A=1"], working_dir="/data")
    return build_image(st, [l1, l2, l3], cfg, names=(name,) if name else (),
                       compression=["gzip", "zstd", "none"], platform=platform)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryServer:
    """Debian's docker-registry on 127.0.0.1:PORT, plain or TLS + htpasswd."""

    def __init__(self, base: Path, tls: bool = False, user: str = "", password: str = "") -> None:
        self.base = base
        self.tls = tls
        self.user, self.password = user, password
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data = base / "data"
        self.certs = base / "certs"        # a --cert-dir: certs/HOST/ca.crt
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryServer:
        self.base.mkdir(parents=True, exist_ok=True)
        cfg = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
               "storage:", "  filesystem:", f"    rootdirectory: {self.data}",
               "  delete:", "    enabled: true", "http:", f"  addr: {self.host}"]
        if self.tls:
            key, cert = self.base / "key.pem", self.base / "cert.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", str(key), "-out", str(cert), "-days", "2",
                            "-subj", "/CN=127.0.0.1", "-addext",
                            "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                           check=True, capture_output=True)
            cfg += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
            (self.certs / self.host).mkdir(parents=True)
            shutil.copy(cert, self.certs / self.host / "ca.crt")
        if self.user:
            out = subprocess.run(["htpasswd", "-Bbn", self.user, self.password],
                                 check=True, capture_output=True, text=True).stdout
            (self.base / "htpasswd").write_text(out)
            cfg += ["auth:", "  htpasswd:", "    realm: test",
                    f"    path: {self.base / 'htpasswd'}"]
        (self.base / "config.yml").write_text("\n".join(cfg) + "\n")
        log = open(self.base / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.base / "config.yml")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: " +
                                   (self.base / "registry.log").read_text())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def blob_file(self, digest: str) -> Path:
        h = digest.partition(":")[2]
        return self.data / "docker/registry/v2/blobs/sha256" / h[:2] / h / "data"

    def catalog(self) -> bytes:
        data: bytes = urllib.request.urlopen(f"http://{self.host}/v2/_catalog").read()
        return data


def overlay_mounts(under: Path) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4]
            if mp.startswith(str(under)):
                out.append(mp)
    return out


def store_files(root: Path) -> dict[str, list[str]]:
    """What a store holds: blobs, snapshots, tmp entries."""
    def ls(p: Path) -> list[str]:
        return sorted(os.listdir(p)) if p.exists() else []
    return {"blobs": ls(root / "blobs" / "sha256"), "snapshots": ls(root / "snapshots"),
            "tmp": ls(root / "tmp")}


# ---- cove over a store root ---------------------------------------------------------

COVE = [sys.executable, "-m", "cove.cli.main"]


def cove_at(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    if args[:1] == ("run",):  # no bridge on the host: the default network is a bridge
        args = ("run", "--network", "none", *args[1:])
    r = subprocess.run([*COVE, "--root", root, *args], capture_output=True, text=True,
                       env=env, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def searchable(p: Path) -> None:
    for x in (p, *p.parents):
        if str(x) in ("/", "/tmp"):
            break
        x.chmod(x.stat().st_mode | 0o111)
