"""docker-py 7 against `cove serve`: run detached, logs(stream=True), exec_run, wait,
images, networks, volumes, events(decode=True)."""

from __future__ import annotations

import threading
import time

from tests.lib.api import Api


def test_containers(api: Api) -> None:
    client = api.client()
    c = client.containers.run("busybox", ["sh", "-c", "echo a; echo b >&2; sleep 0.5; "
                                          "echo c; sleep 30"], detach=True, name="py1",
                              labels={"k": "v"}, environment={"E": "1"})
    try:
        assert c.status in ("created", "running")
        it = c.logs(stream=True)
        got = b""
        while b"c\n" not in got:
            got += next(it)
        assert got.startswith(b"a\n") and b"b\n" in got
        r = c.exec_run(["sh", "-c", "echo $E; echo err >&2; exit 2"])
        assert r.exit_code == 2 and r.output == b"1\nerr\n"
        r = c.exec_run("echo x", demux=True)
        assert r.output == (b"x\n", None)
        assert [x.name for x in client.containers.list(filters={"label": "k=v"})] == ["py1"]
        c.reload()
        assert c.attrs["Config"]["Env"] == ["E=1"] and c.labels == {"k": "v"}
        c.kill()
        assert c.wait(timeout=10)["StatusCode"] == 137
    finally:
        c.remove(force=True)
    assert client.containers.run("busybox", "echo hello", remove=True) == b"hello\n"


def test_images_networks_volumes(api: Api) -> None:
    client = api.client()
    img = client.images.pull("busybox", tag="latest")
    assert any("busybox" in t for t in img.tags)   # (the built-in: localhost/busybox)
    assert client.images.get("busybox").id == img.id
    img.tag("mybox", "v1")
    assert "mybox:v1" in client.images.get("mybox:v1").tags
    client.images.remove("mybox:v1")
    net = client.networks.create("pynet")
    vol = client.volumes.create("pyvol", labels={"a": "b"})
    try:
        assert client.networks.get("pynet").id == net.id
        assert client.volumes.get("pyvol").attrs["Labels"] == {"a": "b"}
        out = client.containers.run("busybox", "sh -c 'echo v > /v/f; cat /v/f'",
                                    volumes={"pyvol": {"bind": "/v", "mode": "rw"}},
                                    network="pynet", remove=True)
        assert out == b"v\n"
    finally:
        net.remove()
        vol.remove()


def test_events_decode(api: Api) -> None:
    client = api.client()
    seen: list[dict[str, object]] = []
    stream = client.events(decode=True, filters={"type": "container"})

    def read() -> None:
        for e in stream:
            seen.append(e)
            if e.get("Action") == "destroy":
                return
    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(0.3)
    client.containers.run("busybox", "true", remove=True)
    t.join(10)
    stream.close()
    assert {"create", "start", "die", "destroy"} <= {str(e["Action"]) for e in seen}


def test_tty_containers(api: Api) -> None:
    """docker-py's tty containers: `run(tty=True)` returns the terminal's raw output
    (no frames, \\r\\n); a detached one with stdin open takes input through
    attach_socket, is resized, and logs raw."""
    client = api.client()
    out = client.containers.run("busybox", ["sh", "-c", "echo hi; tty"], tty=True,
                                network_mode="none", remove=True)
    assert out.startswith(b"hi\r\n/dev/pts/"), out
    c = client.containers.run("busybox", "sh", tty=True, stdin_open=True, detach=True,
                              network_mode="none", name="pytty")
    try:
        sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = sock._sock
        c.resize(height=24, width=77)
        raw.sendall(b"stty size; echo $((6*7))\n")
        got = b""
        raw.settimeout(10)
        while b"42\r\n" not in got:
            data = raw.recv(4096)
            assert data, got
            got += data
        assert b"24 77\r\n" in got, got
        sock.close()
        assert b"42\r\n" in c.logs()
        c.reload()
        assert c.attrs["Config"]["Tty"] is True and c.status == "running"
        c.kill()
        assert c.wait(timeout=10)["StatusCode"] == 137
    finally:
        c.remove(force=True)
