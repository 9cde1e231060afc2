"""A Distribution (OCI / Docker registry v2) client on http.client.

- TLS verified against the system CAs plus a per-registry CA dir
  (`CERT_DIR/HOST[:PORT]/*.crt`; `*.cert` + `*.key` as a client certificate), with
  CERT_DIR `/etc/containers/certs.d` unless overridden (`--cert-dir`).
- Plain HTTP only for localhost/127.0.0.0/8/::1 or with `tls_verify=False`: those try
  HTTPS first and fall back when the server does not speak TLS.
- Auth from the 401's WWW-Authenticate: Bearer (a token from the realm, with basic
  credentials when known) or Basic.
- Connection errors, 5xx and 429 are retried (3 tries, backing off).
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Callable
from typing import IO, Any

from cove.errors import CoveError
from cove.image.regclient import Client, RegistryError, SinkFailed, range_start, why_of
from cove.oci.image import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    manifest_media_type,
    sha256_digest,
)

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
CHUNK_UPLOAD = 16 << 20        # blobs larger than this go up in PATCH chunks
MAX_MANIFEST = 4 << 20


class Registry(Client):
    """A Distribution registry: manifests and blobs, fetched and pushed."""

    # -- the API -------------------------------------------------------------------
    @staticmethod
    def scope(repo: str, actions: str = "pull") -> str:
        return f"repository:{repo}:{actions}"

    def check(self) -> None:
        """GET /v2/ (with auth): what `cove login` verifies."""
        r = self.request("GET", "/v2/", scopes=(), what=f"registry {self.host}")
        r.read()

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(content, media type, digest) of a manifest or index; verified when `ref` is a
        digest or the registry names one."""
        what = f"{self.host}/{repo}:{ref}" if not ref.startswith("sha256:") \
            else f"{self.host}/{repo}@{ref}"
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                         headers={"Accept": MANIFEST_ACCEPT},
                         scopes=(self.scope(repo),), what=what)
        assert r.body is not None
        try:
            data = r.body.read(MAX_MANIFEST + 1)
        finally:
            r.close()
        if len(data) > MAX_MANIFEST:
            raise RegistryError(what, "manifest larger than 4 MiB")
        digest = sha256_digest(data)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(what, f"manifest digest mismatch: content hashes to {digest}")
        claimed = r.headers.get("docker-content-digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(what, f"manifest digest mismatch: registry says {claimed}, "
                                      f"content hashes to {digest}")
        ct = r.headers.get("content-type", "").split(";")[0].strip()
        mt = ct
        if mt not in (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST):
            try:
                mt = manifest_media_type(data)
            except CoveError as e:
                raise RegistryError(what, f"not a manifest (Content-Type {ct or 'none'}): "
                                          f"{e.why or e}") from None
        return data, mt, digest

    def fetch_blob(self, repo: str, digest: str, sink: Any,
                   on_data: Callable[[int], None] | None = None) -> None:
        """Stream a blob into `sink` (a store BlobWriter: write/reset/commit, `written`).
        An interrupted transfer (the connection drops, fewer bytes than Content-Length)
        is retried from where it stopped with a Range request; a server that ignores
        Range starts it over. `commit` verifies the digest."""
        what = f"{self.host}/{repo}@{digest}"
        for attempt in range(self.retries + 1):
            offset = int(getattr(sink, "written", 0))
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            r = self.request("GET", f"/v2/{repo}/blobs/{digest}", headers=headers,
                             ok=(200, 206, 416), scopes=(self.scope(repo),), what=what)
            try:
                assert r.body is not None
                if r.status == 416:     # nothing left past `offset`: let commit verify
                    break
                if r.status == 206:
                    start = range_start(r.headers.get("content-range", ""))
                    if start != offset:
                        sink.reset()
                        raise http.client.HTTPException(
                            f"asked for bytes from {offset}, got {start}")
                elif offset:
                    sink.reset()        # a full response: the server ignored Range
                while chunk := r.body.read(1 << 20):
                    try:
                        sink.write(chunk)
                    except OSError as e:   # the local disk (full?): not worth a retry
                        raise SinkFailed() from e
                    if on_data:
                        on_data(len(chunk))
                left = getattr(r.body, "length", None)
                if isinstance(left, int) and left > 0:
                    raise http.client.IncompleteRead(b"", left)
                break
            except SinkFailed as e:
                assert e.__cause__ is not None
                raise e.__cause__ from None
            except (OSError, http.client.HTTPException) as e:
                if attempt == self.retries:
                    raise RegistryError(what, f"download failed after {attempt + 1} tries: "
                                              f"{why_of(e)}") from None
            finally:
                r.close()
            time.sleep(min(0.2 * 2 ** attempt, 2))
        self.stats.add("downloaded", digest)

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404),
                         scopes=(self.scope(repo, "pull,push"),),
                         what=f"{self.host}/{repo}@{digest}")
        r.close()
        return r.status == 200

    def start_upload(self, repo: str, digest: str, mount_from: str | None = None
                     ) -> str | None:
        """POST an upload (a cross-repo mount when `mount_from`): None when the registry
        mounted the blob, else the upload location."""
        path = f"/v2/{repo}/blobs/uploads/"
        scopes: tuple[str, ...] = (self.scope(repo, "pull,push"),)
        if mount_from:
            path += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
            scopes += (self.scope(mount_from),)
        r = self.request("POST", path, ok=(201, 202), scopes=scopes,
                         headers={"Content-Length": "0"}, body=b"",
                         what=f"{self.host}/{repo}@{digest}")
        r.read()
        if r.status == 201 and mount_from:
            return None
        loc = r.headers.get("location")
        if not loc:
            raise RegistryError(f"{self.host}/{repo}", "upload started without a Location")
        return urllib.parse.urljoin(self._base() + path, loc)

    def upload_blob(self, repo: str, digest: str, size: int, opener: Callable[[], IO[bytes]],
                    location: str | None = None,
                    on_data: Callable[[int], None] | None = None) -> None:
        what = f"{self.host}/{repo}@{digest}"
        scopes = (self.scope(repo, "pull,push"),)
        loc = location or self.start_upload(repo, digest)
        assert loc is not None

        def with_digest(u: str) -> str:
            return u + ("&" if "?" in u else "?") + urllib.parse.urlencode({"digest": digest})

        if size <= CHUNK_UPLOAD:
            r = self.request("PUT", with_digest(loc), body=opener, ok=(201,), scopes=scopes,
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(size)}, what=what)
            r.read()
        else:
            with opener() as f:
                off = 0
                while off < size:
                    chunk = f.read(CHUNK_UPLOAD)
                    r = self.request("PATCH", loc, body=chunk, ok=(202,), scopes=scopes,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(len(chunk)),
                                              "Content-Range": f"{off}-{off + len(chunk) - 1}"},
                                     what=what)
                    r.read()
                    loc = urllib.parse.urljoin(loc, r.headers.get("location", loc))
                    off += len(chunk)
                    if on_data:
                        on_data(len(chunk))
            r = self.request("PUT", with_digest(loc), body=b"", ok=(201,), scopes=scopes,
                             headers={"Content-Length": "0"}, what=what)
            r.read()
        self.stats.add("uploaded", digest)

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=data, ok=(201, 200),
                         headers={"Content-Type": media_type,
                                  "Content-Length": str(len(data))},
                         scopes=(self.scope(repo, "pull,push"),),
                         what=f"{self.host}/{repo}:{ref}")
        r.read()
        digest = sha256_digest(data)
        claimed = r.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise RegistryError(f"{self.host}/{repo}:{ref}",
                                f"registry stored the manifest as {claimed}, not {digest}")
        return digest
