"""Bad input to `cove serve`: docker-shaped errors, the server keeps serving, nothing
half-made left behind."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import time
from pathlib import Path

from tests.lib.api import Api


def _alive(api: Api) -> None:
    assert api.request("GET", "/_ping")[0] == 200


def test_malformed_and_wrong_bodies(api: Api) -> None:
    for body in (b"{not json", b"[1, 2]", json.dumps({"Image": "busybox", "Cmd": 5})):
        status, headers, doc = api.request("POST", "/containers/create", body,
                                           {"Content-Type": "application/json"})
        assert status == 400 and isinstance(doc["message"], str), doc
        assert headers["api-version"] == "1.41"
    assert api.docker("ps", "-aq").stdout == ""
    _alive(api)


def test_unknown_endpoint_and_unsupported_option(api: Api) -> None:
    status, _, doc = api.request("GET", "/v1.41/nosuch/thing")
    assert status == 404 and "page not found" in doc["message"]
    status, _, doc = api.request("GET", "/v9.99/version")
    assert status == 400 and "too new" in doc["message"]
    body = json.dumps({"Image": "busybox", "HostConfig": {"VolumesFrom": ["x"]}})
    status, _, doc = api.request("POST", "/containers/create", body,
                                 {"Content-Type": "application/json"})
    assert status == 400 and "VolumesFrom" in doc["message"]
    status, _, doc = api.request("GET", "/containers/json?filters=%7Bbad")
    assert status == 400
    status, _, doc = api.request("POST", "/containers/nosuch/start")
    assert status == 404 and "No such container" in doc["message"]
    assert api.docker("ps", "-aq").stdout == ""


def test_huge_header_is_refused(api: Api) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(api.sock)
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 431")
    _alive(api)


def test_client_gone_mid_stream(api: Api) -> None:
    api.docker("run", "-d", "--name", "chatty", "busybox", "sh", "-c",
               "while true; do echo tick; sleep 0.05; done")
    try:
        for path in ("/containers/chatty/logs?follow=1&stdout=1", "/events"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(api.sock)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.close()   # gone, mid-stream
        time.sleep(0.3)
        _alive(api)
        assert api.docker("logs", "--tail", "1", "chatty").stdout == "tick\n"
    finally:
        api.docker("rm", "-f", "chatty")


def _tar(entries: list[tarfile.TarInfo], data: bytes = b"evil\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for ti in entries:
            if ti.isreg():
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def test_archive_put_path_traversal(api: Api, tmp_path: Path) -> None:
    api.docker("run", "-d", "--name", "cpt", "busybox", "sleep", "30")
    target = f"/tmp/cove-api-escape-{os.getpid()}"
    try:
        up = tarfile.TarInfo("../../../../../../.." + target)
        link = tarfile.TarInfo("hostroot")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        via = tarfile.TarInfo("hostroot" + target)
        for entries in ([up], [link, via]):
            status, _, doc = api.request("PUT", "/containers/cpt/archive?path=/tmp",
                                         _tar(entries))
            assert not os.path.exists(target)
            assert status in (200, 400), doc
        status, _, doc = api.request("PUT", "/containers/cpt/archive?path=/../../etc",
                                     _tar([tarfile.TarInfo("x")]))
        assert not os.path.exists("/etc/x") or status == 400
        _alive(api)
    finally:
        api.docker("rm", "-f", "cpt")
