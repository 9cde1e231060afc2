"""Image documents (errors name the JSON path), references, and bearer-token auth and
chunked uploads against an in-process fake registry."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cove.errors import CoveError
from cove.image import reference
from cove.image.registry import Registry
from cove.oci.image import ImageConfig, Index, Manifest, Platform


def test_image_config_parse_and_errors() -> None:
    cfg = ImageConfig.parse(json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/e"], "Cmd": ["a"], "Env": ["A=1"], "WorkingDir": "/w",
                   "User": "1:2", "Volumes": {"/data": {}}, "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}}))
    c = cfg.config
    assert (c.entrypoint, c.cmd, c.env, c.working_dir, c.user, c.volumes, c.exposed_ports) \
        == (["/e"], ["a"], ["A=1"], "/w", "1:2", ["/data"], ["80/tcp"])
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"config": {"Env": ["A=1", 3]}}, "config.Env[1]", "expected string"),
        ({"config": {"Env": ["NOEQUALS"]}}, "config.Env[0]", "KEY=VALUE"),
        ({"config": {"WorkingDir": "rel"}}, "config.WorkingDir", "absolute"),
        ({"config": {"Cmd": "sh"}}, "config.Cmd", "expected array"),
        ({"rootfs": {"type": "layers", "diff_ids": ["md5:x"]}}, "rootfs.diff_ids[0]",
         "unsupported digest"),
        ({"rootfs": None}, "rootfs", "required"),
    ]
    base: dict[str, Any] = {"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}}
    for patch, path, why in cases:
        doc = {**base, **patch}
        if doc.get("rootfs") is None:
            del doc["rootfs"]
        with pytest.raises(CoveError) as ei:
            ImageConfig.parse(json.dumps(doc))
        assert ei.value.what == path and why in ei.value.why


def test_manifest_and_index_errors() -> None:
    with pytest.raises(CoveError, match=r"layers\[0\]\.digest"):
        Manifest.parse(json.dumps({"schemaVersion": 2, "config": {
            "mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:short", "size": 1}]}))
    with pytest.raises(CoveError, match="schemaVersion"):
        Manifest.parse('{"schemaVersion": 1}')
    d = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1}
    idx = Index.parse(json.dumps({"schemaVersion": 2, "manifests": [
        {**d, "digest": "sha256:" + "1" * 64, "platform": {"os": "linux",
                                                           "architecture": "arm64"}},
        {**d, "digest": "sha256:" + "2" * 64, "platform": {"os": "linux",
                                                           "architecture": "arm",
                                                           "variant": "v7"}}]}))
    assert idx.select(Platform("linux", "arm64", "v8")).digest.endswith("1" * 64)
    assert idx.select(Platform("linux", "arm", "v7")).digest.endswith("2" * 64)
    with pytest.raises(CoveError, match="not in the image index"):
        idx.select(Platform("linux", "arm", "v6"))


def test_references() -> None:
    p = reference.parse
    assert str(p("busybox")) == "docker.io/library/busybox:latest"
    assert str(p("user/app:1")) == "docker.io/user/app:1"
    assert str(p("localhost:5000/a/b")) == "localhost:5000/a/b:latest"
    r = p("127.0.0.1:5000/x@sha256:" + "f" * 64)
    assert (r.registry, r.repository, r.reference) == ("127.0.0.1:5000", "x",
                                                       "sha256:" + "f" * 64)
    assert reference.local_candidates("busybox")[0] == "localhost/busybox:latest"
    for bad in ("UPPER/case", "a//b", "x:bad tag", ""):
        with pytest.raises(CoveError):
            p(bad)


# -- a fake registry with a token server -------------------------------------------------

class Fake:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.patches = 0
        self.token_requests: list[dict[str, Any]] = []
        self.port = 0


def _handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
                  ) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authed(self) -> bool:
            if self.headers.get("Authorization") == "Bearer tok-ok":
                return True
            realm = f"http://127.0.0.1:{fake.port}/token"
            self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                "WWW-Authenticate": f'Bearer realm="{realm}",service="fake",'
                                    'scope="repository:x:pull"'})
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                fake.token_requests.append({"path": self.path,
                                            "auth": self.headers.get("Authorization")})
                ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(
                    b"u:p").decode()
                if ok:
                    self._send(200, b'{"token": "tok-ok"}')
                else:
                    self._send(401)
                return
            if not self._authed():
                return
            if self.path == "/v2/":
                self._send(200, b"{}")
            elif "/blobs/" in self.path:
                dg = self.path.rsplit("/", 1)[1]
                if dg in fake.blobs:
                    self._send(200, fake.blobs[dg])
                else:
                    self._send(404)
            else:
                self._send(404)

        def do_HEAD(self) -> None:
            if self._authed():
                dg = self.path.rsplit("/", 1)[1]
                self._send(200 if dg in fake.blobs else 404)

        def do_POST(self) -> None:
            if self._authed():
                self._body()
                uid = str(len(fake.uploads))
                fake.uploads[uid] = bytearray()
                self._send(202, headers={"Location": f"/v2/x/blobs/uploads/{uid}"})

        def do_PATCH(self) -> None:
            if self._authed():
                uid = self.path.split("?")[0].rsplit("/", 1)[1]
                fake.uploads[uid] += self._body()
                fake.patches += 1
                self._send(202, headers={"Location": f"/v2/x/blobs/uploads/{uid}"})

        def do_PUT(self) -> None:
            if not self._authed():
                return
            path, _, q = self.path.partition("?")
            uid = path.rsplit("/", 1)[1]
            dg = q.partition("digest=")[2].replace("%3A", ":")
            data = bytes(fake.uploads[uid]) + self._body()
            if "sha256:" + hashlib.sha256(data).hexdigest() != dg:
                self._send(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                return
            fake.blobs[dg] = data
            self._send(201, headers={"Location": f"/v2/x/blobs/{dg}"})
    return H


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(f))
    f.port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f
    srv.shutdown()
    srv.server_close()
    t.join()


def test_bearer_token_and_chunked_upload(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    from cove.image import registry
    monkeypatch.setattr(registry, "CHUNK_UPLOAD", 1000)
    reg = Registry(f"127.0.0.1:{fake.port}", creds=("u", "p"))
    reg.check()
    data = bytes(range(256)) * 20                       # 5120 bytes: 6 PATCH chunks
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    assert not reg.blob_exists("x", dg)
    import io
    reg.upload_blob("x", dg, len(data), lambda: io.BytesIO(data))
    assert fake.blobs[dg] == data and fake.patches == 6
    assert reg.blob_exists("x", dg)
    assert any("scope=repository%3Ax%3Apull%2Cpush" in r["path"]
               for r in fake.token_requests)
    bad = Registry(f"127.0.0.1:{fake.port}", creds=("u", "wrong"))
    with pytest.raises(CoveError, match="wrong username or password"):
        bad.check()
    anon = Registry(f"127.0.0.1:{fake.port}", authfile="/nonexistent/auth.json")
    with pytest.raises(CoveError, match="authentication required"):
        anon.check()
