"""Bad input, each answered with one clear line (`cove: ...`, exit 1) and a store that
stays consistent (`cove images` works, nothing half-written is left): malformed
references, manifests that do not parse or lie about sizes, unsupported media types,
interrupted downloads (resumed with Range requests, also across a killed `cove pull`;
cleaned up when they cannot be), a full disk (a tiny tmpfs as the store root).

A small fake registry (http.server on 127.0.0.1) serves the hostile documents:
Debian's docker-registry validates what is pushed to it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cove.image.store import Store
from cove.oci.image import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from tests.lib.images import COVE, cove_at, f, store_files, tar_bytes
from tests.lib.paths import RUNTIME

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs, runs cove: root")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Serves manifests and blobs from dicts; blobs may be cut short (`truncate`: that
    many responses end half-way) or stall half-way until released (`stall`)."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.blobs: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.stall: dict[str, threading.Event] = {}
        self.stalled = threading.Event()
        self.requests: list[tuple[str, str, str]] = []       # method, path, Range
        reg = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(body=False)

            def do_GET(self, body: bool = True) -> None:
                reg.requests.append((self.command, self.path, self.headers.get("Range", "")))
                parts = self.path.split("/")
                if self.path == "/v2/":
                    return self._send(200, b"{}", "application/json")
                if len(parts) >= 5 and parts[-2] == "manifests":
                    key = "/".join(parts[2:-2]) + ":" + parts[-1]
                    if key not in reg.manifests:
                        return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN",'
                                               b'"message":"manifest unknown"}]}',
                                          "application/json")
                    data, ct, extra = reg.manifests[key]
                    return self._send(200, data, ct, extra, body)
                if len(parts) >= 5 and parts[-2] == "blobs" and parts[-1] in reg.blobs:
                    return self._blob(parts[-1], body)
                return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}',
                                  "application/json")

            def _send(self, code: int, data: bytes, ct: str,
                      extra: dict[str, str] | None = None, body: bool = True) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ct)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _blob(self, digest: str, body: bool) -> None:
                data = reg.blobs[digest]
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                rest = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if not body:
                    return
                cut = len(rest) // 2 + 100
                if reg.truncate.get(digest, 0) > 0:
                    reg.truncate[digest] -= 1
                    self.wfile.write(rest[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                ev = reg.stall.get(digest)
                if ev is not None:
                    self.wfile.write(rest[:cut])
                    self.wfile.flush()
                    reg.stalled.set()
                    ev.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(rest)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def put_manifest(self, repo_tag: str, doc: dict[str, Any] | bytes,
                     ct: str = OCI_MANIFEST, headers: dict[str, str] | None = None) -> str:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.manifests[repo_tag] = (data, ct, headers or {})
        return f"{self.host}/{repo_tag}"

    def blob(self, data: bytes) -> str:
        d = sha(data)
        self.blobs[d] = data
        return d

    def image(self, repo_tag: str, layers: list[bytes], *, media: str = OCI_LAYER_GZIP,
              diff_ids: list[str] | None = None, config: bytes | None = None,
              sizes: list[int] | None = None, config_type: str = OCI_CONFIG,
              config_size: int | None = None) -> str:
        """Push (well, serve) an image whose layers are `layers` (tar bytes, gzipped
        for the gzip media type) with the given lies."""
        blobs = [gzip.compress(x, mtime=0) if media == OCI_LAYER_GZIP else x for x in layers]
        cfg = config if config is not None else json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers",
                       "diff_ids": diff_ids if diff_ids is not None else
                       [sha(x) for x in layers]}}).encode()
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": config_type, "digest": self.blob(cfg),
                          "size": len(cfg) if config_size is None else config_size},
               "layers": [{"mediaType": media, "digest": self.blob(b),
                           "size": len(b) if sizes is None else sizes[i]}
                          for i, b in enumerate(blobs)]}
        return self.put_manifest(repo_tag, doc)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeRegistry]:
    r = FakeRegistry()
    r.thread.start()
    yield r
    for ev in r.stall.values():
        ev.set()
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def one_line_error(r: subprocess.CompletedProcess[str], *want: str) -> str:
    # `run` fails before its container runs: docker's 125
    code = 125 if list(r.args)[5:6] == ["run"] else 1  # (python -m cove --root R VERB)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cove: "), r.stderr
    for w in want:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def consistent(root: str, images: int = 0, partials: int = 0, orphans: bool = False) -> None:
    """`cove images` works and lists `images`; no half-written blob or snapshot; every
    blob and snapshot belongs to a recorded image (a killed pull may leave complete,
    verified blobs that the next pull reuses and `cove image prune` removes)."""
    r = cove_at(root, "images", "--format", "json")
    assert len(json.loads(r.stdout)) == images
    if not os.path.isdir(root):
        return
    files = store_files(Path(root))
    assert len([t for t in files["tmp"] if t.startswith("partial-")]) == partials, files
    assert [t for t in files["tmp"] if not t.startswith("partial-")] == [], files
    assert not [s for s in files["snapshots"] if s.startswith(".")], files
    blobs, diffs = Store(root).referenced()
    if orphans:
        return
    assert {f"sha256:{b}" for b in files["blobs"]} <= blobs
    assert {f"sha256:{s}" for s in files["snapshots"]} <= diffs


def pull(root: str, ref: str) -> subprocess.CompletedProcess[str]:
    return cove_at(root, "pull", "-q", ref, check=False)


def small_layer(tag: str = "x") -> bytes:
    return tar_bytes([f("etc/hello", tag.encode())])


# -- references -----------------------------------------------------------------------

@pytest.mark.parametrize("ref,why", [
    ("", "empty"),
    ("UPPER/Case", "invalid repository name"),
    ("name:tag:extra", "invalid repository name"),
    ("name:", "invalid tag"),
    ("name:bad!tag", "invalid tag"),
    ("name:" + "t" * 200, "invalid tag"),
    ("localhost:5000//double", "invalid repository name"),
    ("name@sha256:abc", "malformed digest"),
    ("name@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest"),
    ("name/", "invalid repository name"),
])
def test_malformed_references(root: str, ref: str, why: str) -> None:
    for verb in ("pull", "push", "run"):
        args = (verb, ref) if verb != "run" else ("run", "--rm", ref, "true")
        one_line_error(cove_at(root, *args, check=False), why)
    consistent(root)


# -- manifests ------------------------------------------------------------------------

CFG = {"mediaType": OCI_CONFIG, "digest": sha(b"{}"), "size": 2}
LAYER = {"mediaType": OCI_LAYER_GZIP, "digest": sha(b"x"), "size": 1}


@pytest.mark.parametrize("name,doc,ct,why", [
    ("not-json", b"{not json", OCI_MANIFEST, "malformed JSON"),
    ("html", b"<html><body>Proxy login</body></html>", "text/html", "malformed JSON"),
    ("array", b"[1, 2]", OCI_MANIFEST, "expected a JSON object"),
    ("schema1", {"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []},
     "application/vnd.docker.distribution.manifest.v1+prettyjws",
     "unsupported schema version 1"),
    ("no-layers", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CFG},
     OCI_MANIFEST, "layers: required field is missing"),
    ("layers-object", {"schemaVersion": 2, "config": CFG, "layers": {}}, OCI_MANIFEST,
     "layers: expected array"),
    ("bad-digest", {"schemaVersion": 2, "config": CFG,
                    "layers": [{**LAYER, "digest": "sha256:xyz"}]}, OCI_MANIFEST,
     "malformed digest"),
    ("negative-size", {"schemaVersion": 2, "config": CFG,
                       "layers": [{**LAYER, "size": -1}]}, OCI_MANIFEST,
     "must not be negative"),
    ("string-size", {"schemaVersion": 2, "config": CFG,
                     "layers": [{**LAYER, "size": "12"}]}, OCI_MANIFEST,
     "layers[0].size: expected integer"),
    ("unknown-manifest-type", {"schemaVersion": 2, "mediaType": "application/x-foo",
                               "config": CFG, "layers": []}, OCI_MANIFEST,
     "unsupported manifest type"),
    ("unknown-layer-type", {"schemaVersion": 2, "config": CFG, "layers": [
        {**LAYER, "mediaType": "application/vnd.example.layer.v1+squashfs"}]},
     OCI_MANIFEST, "unsupported layer type"),
    ("helm-chart", {"schemaVersion": 2, "config": {
        **CFG, "mediaType": "application/vnd.cncf.helm.config.v1+json"}, "layers": []},
     OCI_MANIFEST, "not a container image"),
    ("empty-index", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []},
     OCI_INDEX, "not in the image index (it has: none)"),
    ("huge", b'{"pad": "' + b"x" * (5 << 20) + b'"}', OCI_MANIFEST, "larger than 4 MiB"),
])
def test_bad_manifests(fake: FakeRegistry, root: str, name: str, doc: Any, ct: str,
                       why: str) -> None:
    ref = fake.put_manifest(f"bad/{name}:1", doc, ct)
    line = one_line_error(pull(root, ref), why)
    assert f"bad/{name}" in line
    consistent(root)


def test_manifest_digest_header_lies(fake: FakeRegistry, root: str) -> None:
    ref = fake.image("bad/digest-header:1", [small_layer()])
    data, ct, _ = fake.manifests["bad/digest-header:1"]
    fake.manifests["bad/digest-header:1"] = (data, ct, {
        "Docker-Content-Digest": sha(b"something else")})
    one_line_error(pull(root, ref), "manifest digest mismatch")
    # By digest: the content must hash to it.
    fake.manifests["bad/digest-header:" + sha(b"other")] = (data, ct, {})
    one_line_error(pull(root, f"{fake.host}/bad/digest-header@{sha(b'other')}"),
                   "manifest digest mismatch")
    consistent(root)


@pytest.mark.parametrize("case,why", [
    ("layer-smaller", "more data than its declared size"),
    ("layer-larger", "size mismatch"),
    ("config-smaller", "more data than its declared size"),
    ("config-not-json", "image config: malformed JSON"),
    ("config-not-image", "rootfs: required field is missing"),
    ("diff-ids-count", "config lists 2 diff_ids for 1 layers"),
    ("diff-id-wrong", "diffID mismatch"),
    ("not-gzip", "corrupt compressed stream"),
    ("not-a-tar", "not a valid tar stream"),
    ("docker-type-zstd-data", "corrupt compressed stream"),
])
def test_blobs_that_lie(fake: FakeRegistry, root: str, case: str, why: str) -> None:
    good = small_layer(case)
    repo = f"lies/{case}:1"
    kw: dict[str, Any] = {}
    layers = [good]
    if case == "layer-smaller":
        kw["sizes"] = [len(gzip.compress(good, mtime=0)) - 10]
    elif case == "layer-larger":
        kw["sizes"] = [len(gzip.compress(good, mtime=0)) + 10]
    elif case == "config-smaller":
        kw["config_size"] = 5
    elif case == "config-not-json":
        kw["config"] = b"not json"
    elif case == "config-not-image":
        kw["config"] = b'{"architecture": "amd64", "os": "linux"}'
    elif case == "diff-ids-count":
        kw["diff_ids"] = [sha(good), sha(b"2")]
    elif case == "diff-id-wrong":
        kw["diff_ids"] = [sha(b"not the tar")]
    elif case == "not-gzip":
        kw["media"] = "application/vnd.oci.image.layer.v1.tar+gzip-but-plain"
    elif case == "not-a-tar":
        layers = [b"plain text, not a tar archive" * 40]
        kw["media"] = OCI_LAYER
    elif case == "docker-type-zstd-data":
        kw["media"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    if case == "not-gzip":
        # served as gzip, but the bytes are a plain tar
        ref = fake.image(repo, layers, media=OCI_LAYER, **{k: v for k, v in kw.items()
                                                          if k != "media"})
        data, ct, h = fake.manifests[repo]
        fake.manifests[repo] = (data.replace(OCI_LAYER.encode() + b'"',
                                             OCI_LAYER_GZIP.encode() + b'"'), ct, h)
    elif case == "docker-type-zstd-data":
        ref = fake.image(repo, layers, **{k: v for k, v in kw.items() if k != "media"})
        data, ct, h = fake.manifests[repo]
        fake.manifests[repo] = (data.replace(OCI_LAYER_GZIP.encode(),
                                             kw["media"].encode()), ct, h)
    else:
        ref = fake.image(repo, layers, **kw)
    one_line_error(pull(root, ref), why)
    consistent(root)


def test_docker_manifest_type_accepted(fake: FakeRegistry, root: str) -> None:
    """A Docker schema 2 manifest served with its own content type is fine (control)."""
    ref = fake.image("ok/docker:1", [small_layer("docker")])
    data, _, _ = fake.manifests["ok/docker:1"]
    doc = json.loads(data)
    doc["mediaType"] = DOCKER_MANIFEST
    fake.put_manifest("ok/docker:1", doc, DOCKER_MANIFEST)
    assert pull(root, ref).returncode == 0
    consistent(root, images=1)


# -- interrupted downloads ------------------------------------------------------------

def big_layer(n: int = 3 << 20) -> bytes:
    return tar_bytes([f("data/blob", os.urandom(n))])


def test_interrupted_download_resumes(fake: FakeRegistry, root: str) -> None:
    layer = big_layer()
    ref = fake.image("cut/once:1", [layer])
    digest = sha(gzip.compress(layer, mtime=0))
    fake.truncate[digest] = 1
    fake.requests.clear()
    r = pull(root, ref)
    assert r.returncode == 0, r.stderr
    ranges = [rg for m, p, rg in fake.requests if p.endswith(digest) and m == "GET"]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    consistent(root, images=1)


def test_interrupted_download_gives_up_cleanly(fake: FakeRegistry, root: str) -> None:
    layer = big_layer()
    ref = fake.image("cut/always:1", [layer])
    fake.truncate[sha(gzip.compress(layer, mtime=0))] = 100
    one_line_error(pull(root, ref), "download failed after 4 tries",
                   "connection closed with")
    consistent(root)


def test_killed_pull_resumes(fake: FakeRegistry, root: str, tmp_path: Path) -> None:
    """`cove pull` killed half-way leaves a partial blob; the next pull fetches only
    the rest (a Range request) and leaves nothing behind."""
    layer = big_layer(6 << 20)
    ref = fake.image("cut/killed:1", [layer])
    digest = sha(gzip.compress(layer, mtime=0))
    ev = fake.stall[digest] = threading.Event()
    fake.stalled.clear()
    partial = Path(root) / "tmp" / f"partial-{digest.partition(':')[2]}"
    p = subprocess.Popen([*COVE, "--root", root, "pull", "-q", ref],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "COVE_RUNTIME": RUNTIME})
    try:
        assert fake.stalled.wait(30)
        deadline = time.monotonic() + 20
        while not (partial.exists() and partial.stat().st_size >= 1 << 20):
            assert time.monotonic() < deadline, "no partial download appeared"
            time.sleep(0.05)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        del fake.stall[digest]
        ev.set()
    have = partial.stat().st_size
    consistent(root, partials=1, orphans=True)
    fake.requests.clear()
    r = pull(root, ref)
    assert r.returncode == 0, r.stderr
    ranges = [rg for m, pth, rg in fake.requests if pth.endswith(digest) and m == "GET"]
    assert ranges == [f"bytes={have}-"]
    consistent(root, images=1)
    # prune removes a stale partial nobody resumes
    partial.write_bytes(b"left over")
    cove_at(root, "image", "prune")
    consistent(root, images=1)


# -- a full disk ----------------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[str]:
    d = tmp_path / "tiny"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(d)],
                   check=True)
    try:
        yield str(d / "store")
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_full_disk(fake: FakeRegistry, tiny: str) -> None:
    # The blob itself does not fit.
    ref = fake.image("full/blob:1", [big_layer(3 << 20)])
    line = one_line_error(pull(tiny, ref), "no space left in the store")
    assert tiny in line
    consistent(tiny)
    # The blob fits (it compresses well), its unpacked layer does not.
    zeros = tar_bytes([f("data/zeros", bytes(4 << 20))])
    ref = fake.image("full/unpack:1", [zeros])
    one_line_error(pull(tiny, ref), "no space left in the store")
    consistent(tiny)
    # A load that does not fit either.
    src = Path(tiny).parent.parent / "big.tar"
    r = cove_at(str(Path(tiny).parent.parent / "src"), "import", "--compression", "none",
                str(_rootfs_tar(src)), "localhost/big:1")
    assert r.returncode == 0
    out = Path(tiny).parent.parent / "big-saved.tar"
    cove_at(str(Path(tiny).parent.parent / "src"), "save", "-o", str(out), "localhost/big:1")
    one_line_error(cove_at(tiny, "load", "-i", str(out), check=False),
                   "no space left in the store")
    consistent(tiny)
    # The store still works: a small image fits.
    ref = fake.image("full/small:1", [small_layer("fits")])
    assert pull(tiny, ref).returncode == 0
    consistent(tiny, images=1)


def _rootfs_tar(path: Path) -> Path:
    path.write_bytes(tar_bytes([f("data/rand", os.urandom(3 << 20))]))
    return path
