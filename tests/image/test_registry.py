"""Pull and push against Debian's docker-registry: plain HTTP, and TLS with a
self-signed CA + htpasswd (bcrypt) auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cove.errors import CoveError
from cove.image.assemble import build_index
from cove.image.registry import Registry
from cove.image.store import Store
from cove.image.transfer import RegistryOptions, pull, push
from cove.oci.image import Manifest, Platform
from tests.lib.images import PASSWORD, USER, RegistryServer, sample_image, store_files

COVE = [sys.executable, "-m", "cove.cli.main"]


def client(reg: RegistryServer, **kw: Any) -> Registry:
    return Registry(reg.host, **kw)


def test_push_then_pull_by_tag_and_digest(plain: RegistryServer, stores: dict[str, Store],
                                          tmp_path: Path) -> None:
    ref = f"{plain.host}/demo/app:v1"
    digest = sample_image(tmp_path, stores["src"], ref)
    c = client(plain)
    assert push(stores["src"], ref, client=c) == digest
    assert len(c.stats.uploaded) == 4                    # config + 3 layers
    got = pull(stores["dst"], ref)
    assert got == digest
    img = stores["dst"].image(ref)
    assert img.config.config.working_dir == "/data"
    assert len(os.listdir(stores["dst"].snapshot_dir)) == 3
    # by digest, into a third store
    assert pull(stores["third"], f"{plain.host}/demo/app@{digest}") == digest
    assert stores["third"].resolve(digest) == digest
    # the CLI: pull (plain progress lines), images --format json, inspect
    root = str(tmp_path / "store-cli")
    r = subprocess.run([*COVE, "--root", root, "pull", ref], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == digest
    assert "blob" in r.stderr
    out = subprocess.run([*COVE, "--root", root, "images", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["Names"] == [ref]
    out = subprocess.run([*COVE, "--root", root, "inspect", ref], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)[0]["Config"]["Env"] == ["A=1"]


def test_second_push_skips_and_mounts(plain: RegistryServer, stores: dict[str, Store],
                                      tmp_path: Path) -> None:
    ref = f"{plain.host}/dedup/one:v1"
    digest = sample_image(tmp_path, stores["src"], ref, tag="dedup")
    push(stores["src"], ref, client=client(plain))
    again = client(plain)
    push(stores["src"], ref, client=again)
    assert again.stats.uploaded == [] and len(again.stats.skipped) == 4
    other = client(plain)
    push(stores["src"], ref, f"{plain.host}/dedup/two:v1", client=other)
    assert other.stats.uploaded == [] and len(other.stats.mounted) == 4
    # a store that pulled from one repo mounts from it too
    pull(stores["dst"], ref)
    third = client(plain)
    push(stores["dst"], ref, f"{plain.host}/dedup/three:v1", client=third)
    assert third.stats.uploaded == []
    assert pull(stores["check"], f"{plain.host}/dedup/three:v1") == digest


def test_multi_arch_index(plain: RegistryServer, stores: dict[str, Store],
                          tmp_path: Path) -> None:
    from cove.image.platforms import host_platform
    st = stores["src"]
    host = host_platform()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    mine = sample_image(tmp_path, st, "", tag="host", platform=host)
    theirs = sample_image(tmp_path, st, "", tag="other", platform=other)
    ref = f"{plain.host}/multi/app:latest"
    idx = build_index(st, [mine, theirs], names=(ref,))
    assert push(st, ref, client=client(plain)) == idx
    assert pull(stores["a"], ref) == mine
    assert (Path(stores["a"].snapshot_dir).exists())
    assert pull(stores["b"], ref, platform=other) == theirs
    assert stores["b"].image(ref).config.architecture == other.architecture
    with pytest.raises(CoveError, match=r"linux/s390x.*not in the image index"):
        pull(stores["c"], ref, platform=Platform("linux", "s390x"))
    assert store_files(Path(stores["c"].root))["blobs"] == []


def test_digest_mismatch_refused(plain: RegistryServer, stores: dict[str, Store],
                                 tmp_path: Path) -> None:
    ref = f"{plain.host}/corrupt/app:v1"
    sample_image(tmp_path, stores["src"], ref, tag="corrupt")
    push(stores["src"], ref, client=client(plain))
    m = Manifest.parse(stores["src"].manifest_raw(stores["src"].resolve(ref))[0])
    blob = plain.blob_file(m.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF                    # same size, different content
    blob.write_bytes(bytes(data))
    with pytest.raises(CoveError, match="digest mismatch"):
        pull(stores["dst"], ref)
    assert store_files(Path(stores["dst"].root)) == {"blobs": [], "snapshots": [], "tmp": []}
    assert stores["dst"].records() == []


def test_tls_and_basic_auth(secure: RegistryServer, stores: dict[str, Store],
                            tmp_path: Path) -> None:
    ref = f"{secure.host}/private/app:v1"
    digest = sample_image(tmp_path, stores["src"], ref, tag="tls")
    certs = str(secure.certs)
    ok = RegistryOptions(cert_dir=certs, creds=(USER, PASSWORD))
    assert push(stores["src"], ref, opts=ok) == digest
    assert pull(stores["dst"], ref, opts=ok) == digest
    # wrong password: a clear 401
    with pytest.raises(CoveError, match="unauthorized: wrong username or password"):
        pull(stores["bad"], ref, opts=RegistryOptions(cert_dir=certs, creds=(USER, "nope")))
    # no credentials at all
    with pytest.raises(CoveError, match="authentication required"):
        pull(stores["bad"], ref, opts=RegistryOptions(cert_dir=certs,
                                                      authfile=str(tmp_path / "none.json")))
    # unknown CA: a clear TLS message, no fallback to plain HTTP
    with pytest.raises(CoveError, match="certificate verification failed"):
        pull(stores["bad"], ref, opts=RegistryOptions(cert_dir=str(tmp_path / "nocerts"),
                                                      creds=(USER, PASSWORD)))
    assert store_files(Path(stores["bad"].root))["blobs"] == []
    # --tls-verify=false skips verification
    assert pull(stores["insecure"], ref, opts=RegistryOptions(
        tls_verify=False, creds=(USER, PASSWORD))) == digest


def test_login_logout_cli(secure: RegistryServer, stores: dict[str, Store],
                          tmp_path: Path) -> None:
    ref = f"{secure.host}/private/cli:v1"
    sample_image(tmp_path, stores["src"], ref, tag="cli")
    authfile = str(tmp_path / "auth.json")
    base = [*COVE, "--root", stores["src"].root]
    reg = ["--cert-dir", str(secure.certs), "--authfile", authfile]
    r = subprocess.run([*base, "login", *reg, "-u", USER, "-p", "wrong", secure.host],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "wrong username or password" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not os.path.exists(authfile)
    r = subprocess.run([*base, "login", *reg, "-u", USER, "--password-stdin", secure.host],
                       input=PASSWORD + "\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert secure.host in json.loads(Path(authfile).read_text())["auths"]
    r = subprocess.run([*base, "push", "-q", *reg, ref], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*base, "logout", "--authfile", authfile, secure.host],
                       capture_output=True, text=True)
    assert r.returncode == 0
    r = subprocess.run([*COVE, "--root", str(tmp_path / "x"), "pull", "-q", *reg, ref],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "authentication required" in r.stderr
    r = subprocess.run([*COVE, "--root", str(tmp_path / "x"), "pull", *reg,
                        "--cert-dir", str(tmp_path), ref], capture_output=True, text=True)
    assert "certificate verification failed" in r.stderr
