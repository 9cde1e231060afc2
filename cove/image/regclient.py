"""The transport under cove/image/registry.py's Distribution client: connections
(TLS verified against the system CAs plus the registry's CA dir, plain HTTP only where
allowed), auth from the 401's challenge (Bearer or Basic), retries of connection errors,
5xx and 429, and the one-line errors. `Registry` adds the registry API on top."""

from __future__ import annotations

import base64
import glob
import http.client
import json
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from cove.errors import CoveError
from cove.image import auth as authfile_mod

DEFAULT_CERT_DIR = "/etc/containers/certs.d"
USER_AGENT = "cove/0.1"


class RegistryError(CoveError):
    def __init__(self, what: str, why: str = "", status: int = 0) -> None:
        super().__init__(what, why)
        self.status = status


def _is_local(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    return h in ("localhost", "::1") or h.startswith("127.")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def range_start(content_range: str) -> int:
    """The first byte of `bytes START-END/TOTAL` (-1 when it is not that)."""
    unit, _, rest = content_range.strip().partition(" ")
    first = rest.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else -1


class SinkFailed(Exception):
    """Writing a downloaded chunk failed (its __cause__ says why)."""


def why_of(e: BaseException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed with {e.expected} bytes still to come"
    return str(e) or type(e).__name__


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: IO[bytes] | None = None
    conn: http.client.HTTPConnection | None = None
    url: str = ""

    def read(self) -> bytes:
        try:
            return self.body.read() if self.body is not None else b""
        finally:
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Stats:
    """What a client moved: the tests assert on these (no re-upload on a second push)."""
    downloaded: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, digest: str) -> None:
        with self.lock:
            getattr(self, kind).append(digest)


class Client:
    """A registry's connection and auth: `request` is what the API calls go through."""

    def __init__(self, host: str, *, tls_verify: bool = True, cert_dir: str | None = None,
                 creds: tuple[str, str] | None = None, authfile: str | None = None,
                 retries: int = 3, timeout: float = 60.0) -> None:
        self.host = host
        self.tls_verify = tls_verify
        self.cert_dir = cert_dir or DEFAULT_CERT_DIR
        self.creds = creds if creds is not None else authfile_mod.get(host, authfile)
        self.retries = retries
        self.timeout = timeout
        self.api_host = "registry-1.docker.io" if host == "docker.io" else host
        self.scheme: str | None = None
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self.stats = Stats()

    # -- transport -----------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        d = os.path.join(self.cert_dir, self.host)
        for ca in sorted(glob.glob(os.path.join(d, "*.crt"))):
            ctx.load_verify_locations(cafile=ca)
        for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
            key = cert[:-5] + ".key"
            ctx.load_cert_chain(cert, key if os.path.exists(key) else None)
        return ctx

    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self.timeout,
                                               context=self.ssl_context())
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def _tls_error(self, e: ssl.SSLError) -> RegistryError:
        if isinstance(e, ssl.SSLCertVerificationError):
            why = (f"TLS certificate verification failed: {e.verify_message}. Put the "
                   f"registry's CA certificate in {self.cert_dir}/{self.host}/ca.crt "
                   "(or point --cert-dir at a directory with HOST/ca.crt), or use "
                   "--tls-verify=false")
        else:
            why = f"TLS handshake failed: {e.reason or e}"
        return RegistryError(f"registry {self.host}", why)

    def _base(self) -> str:
        if self.scheme is None:
            self._probe()
        return f"{self.scheme}://{self.api_host}"

    def _probe(self) -> None:
        """Pick https or (for local / --tls-verify=false registries) http."""
        insecure_ok = _is_local(self.host) or not self.tls_verify
        conn = self._conn("https", self.api_host)
        try:
            conn.request("GET", "/v2/", headers={"User-Agent": USER_AGENT})
            conn.getresponse().read()
            self.scheme = "https"
            return
        except ssl.SSLCertVerificationError as e:
            raise self._tls_error(e) from None
        except ssl.SSLError as e:
            if not insecure_ok:
                raise self._tls_error(e) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            if not insecure_ok:
                raise RegistryError(f"registry {self.host}", f"cannot connect: {e}") from None
        finally:
            conn.close()
        self.scheme = "http"

    def _auth_header(self, scopes: tuple[str, ...]) -> dict[str, str]:
        key = " ".join(scopes)
        with self._lock:
            tok = self._tokens.get(key)
        if tok:
            return {"Authorization": f"Bearer {tok}"}
        if self._basic and self.creds:
            raw = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    def _authenticate(self, challenge: str, scopes: tuple[str, ...]) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                raise RegistryError(f"registry {self.host}",
                                    f"authentication required: run `cove login {self.host}`",
                                    401)
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {self.host}",
                                f"unsupported authentication challenge {challenge!r}", 401)
        q: list[tuple[str, str]] = []
        if "service" in params:
            q.append(("service", params["service"]))
        want = list(scopes) or ([params["scope"]] if "scope" in params else [])
        q += [("scope", s) for s in want]
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + \
            urllib.parse.urlencode(q)
        headers = {}
        if self.creds:
            raw = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        r = self._raw("GET", url, headers, None)
        body = r.read()
        if r.status == 401:
            raise RegistryError(f"registry {self.host}",
                                "unauthorized: wrong username or password" if self.creds
                                else "authentication required: run `cove login "
                                     f"{self.host}`", 401)
        if r.status != 200:
            raise RegistryError(f"registry {self.host}",
                                f"token server {params['realm']} answered {r.status}")
        try:
            d = json.loads(body)
            tok = d.get("token") or d.get("access_token")
        except (ValueError, AttributeError):
            tok = None
        if not isinstance(tok, str) or not tok:
            raise RegistryError(f"registry {self.host}", "token server gave no token")
        with self._lock:
            self._tokens[" ".join(scopes)] = tok

    def _raw(self, method: str, url: str, headers: dict[str, str],
             body: bytes | IO[bytes] | None) -> Response:
        u = urllib.parse.urlsplit(url)
        conn = self._conn(u.scheme, u.netloc)
        path = u.path + (f"?{u.query}" if u.query else "")
        h = {"User-Agent": USER_AGENT, **headers}
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
        except ssl.SSLError as e:
            conn.close()
            raise self._tls_error(e) from None
        except BaseException:
            conn.close()
            raise
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                        resp, conn, url)

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | Callable[[], IO[bytes]] | None = None,
                scopes: tuple[str, ...] = (), ok: tuple[int, ...] = (200,),
                what: str = "", follow: bool = True) -> Response:
        """One API call with auth, retries and (for GET/HEAD) redirects. `body` is
        bytes or a function opening a fresh stream (called again on a retry). Returns
        a response with a status in `ok`, else raises with the registry's message."""
        what = what or f"{self.host}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 4))
            url = path if "://" in path else self._base() + path
            h = {**(headers or {}), **self._auth_header(scopes)}
            stream = body() if callable(body) else body
            try:
                r = self._raw(method, url, h, stream)
                hops = 0
                while follow and r.status in (301, 302, 303, 307, 308) and \
                        method in ("GET", "HEAD") and hops < 5:
                    loc = urllib.parse.urljoin(r.url, r.headers.get("location", ""))
                    r.close()
                    same = urllib.parse.urlsplit(loc).netloc == urllib.parse.urlsplit(url).netloc
                    r = self._raw(method, loc, h if same else {}, None)
                    hops += 1
            except RegistryError:
                raise
            except (OSError, http.client.HTTPException) as e:
                last = e
                continue
            finally:
                if stream is not None and not isinstance(stream, bytes):
                    stream.close()
            if r.status == 401:
                challenge = r.headers.get("www-authenticate", "")
                r.read()
                if h.get("Authorization", "").startswith("Basic "):
                    raise RegistryError(what, "unauthorized: wrong username or password "
                                              f"for {self.host}", 401)
                if not challenge:
                    raise RegistryError(what, "unauthorized (no challenge given)", 401)
                self._authenticate(challenge, scopes)
                return self._after_auth(method, path, headers, body, scopes, ok, what,
                                        follow)
            if r.status in ok:
                return r
            if r.status >= 500 or r.status == 429:
                r.read()
                last = RegistryError(what, f"server error {r.status}", r.status)
                continue
            raise self._api_error(what, r)
        if isinstance(last, RegistryError):
            raise last
        raise RegistryError(what, f"cannot reach {self.host}: {last}")

    def _after_auth(self, method: str, path: str, headers: dict[str, str] | None,
                    body: bytes | Callable[[], IO[bytes]] | None, scopes: tuple[str, ...],
                    ok: tuple[int, ...], what: str, follow: bool) -> Response:
        url = path if "://" in path else self._base() + path
        h = {**(headers or {}), **self._auth_header(scopes)}
        stream = body() if callable(body) else body
        try:
            r = self._raw(method, url, h, stream)
        finally:
            if stream is not None and not isinstance(stream, bytes):
                stream.close()
        if r.status == 401:
            r.read()
            raise RegistryError(what, "unauthorized: wrong username or password for "
                                      f"{self.host}" if self.creds else
                                "authentication required: run `cove login "
                                f"{self.host}`", 401)
        if r.status in ok:
            return r
        if follow and r.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
            loc = urllib.parse.urljoin(r.url, r.headers.get("location", ""))
            r.close()
            return self.request(method, loc, headers=headers, ok=ok, what=what)
        raise self._api_error(what, r)

    def _api_error(self, what: str, r: Response) -> RegistryError:
        body = r.read() if r.body is not None else b""
        msg = ""
        try:
            errs = json.loads(body).get("errors") or []
            msg = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                            for e in errs)
        except (ValueError, AttributeError):
            pass
        if r.status == 403:
            msg = msg or "access denied"
        return RegistryError(what, f"{r.status} {msg or http.client.responses.get(r.status, '')}"
                             .strip(), r.status)
