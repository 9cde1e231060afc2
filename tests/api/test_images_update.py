"""The API's last gaps: `docker save`/`load` (GET /images/get, /images/{name}/get,
POST /images/load) and `docker update` (POST /containers/{id}/update), with the docker
CLI 20.10 and docker-py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from tests.lib.api import Api


def test_save_and_load(api: Api, tmp_path: Path) -> None:
    api.docker("tag", "busybox", "savebox:1")
    out = tmp_path / "box.tar"
    api.docker("save", "-o", str(out), "savebox:1")
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["savebox:1"], manifest
    api.docker("rmi", "savebox:1")
    r = api.docker("load", "-i", str(out))
    assert r.stdout.strip() == "Loaded image: savebox:1", r
    assert api.docker("images", "-q", "savebox:1").stdout.strip()
    # several at once, through GET /images/get?names=..
    status, headers, body = api.request("GET", "/images/get?names=savebox:1&names=busybox")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body)) as tf:
        tags = [t for m in json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
                for t in m["RepoTags"]]
    assert "savebox:1" in tags and any("busybox" in t for t in tags), tags
    status, _, doc = api.request("GET", "/images/nosuch:1/get")
    assert status == 404 and "nosuch" in doc["message"], doc
    status, _, doc = api.request("POST", "/images/load", body=b"not a tar")
    assert status == 400, doc
    # docker-py: save() chunks, load() them back
    client = api.client()
    data = b"".join(client.api.get_image("savebox:1"))  # (named=True: its first tag)
    client.images.remove("savebox:1")
    loaded = client.images.load(data)  # (the same config as busybox: names added to it)
    assert len(loaded) == 1 and "savebox:1" in loaded[0].tags
    api.docker("rmi", "savebox:1")


def _memory_limit(pid: int) -> int:
    """The memory limit of `pid`'s cgroup (v1's memory controller, or v2's)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            return int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
                       .read_text())
        if ctrls == "" and Path(f"/sys/fs/cgroup{path}/memory.max").exists():
            return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text())
    raise AssertionError("no memory cgroup")


def test_update(api: Api) -> None:
    api.docker("run", "-d", "--name", "upd", "--network", "none", "busybox", "sleep", "60")
    try:
        api.docker("update", "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5",
                   "--pids-limit", "50", "--restart", "on-failure:3", "upd")
        hc = json.loads(api.docker("inspect", "upd").stdout)[0]["HostConfig"]
        assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["PidsLimit"]) == \
            (64 << 20, 128 << 20, 500_000_000, 50), hc
        assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
        # live: the container's cgroup has the limit
        pid = json.loads(api.docker("inspect", "upd").stdout)[0]["State"]["Pid"]
        assert _memory_limit(pid) == 64 << 20
        r = api.docker("update", "--cpuset-cpus", "0", "upd", check=False)
        assert r.returncode != 0 and "CpusetCpus" in r.stderr, r
        r = api.docker("update", "--memory", "1k", "upd", check=False)
        assert r.returncode != 0 and "6MB" in r.stderr, r
        c = api.client().containers.get("upd")
        c.update(restart_policy={"Name": "always"})
        c.reload()
        assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
        r = api.docker("update", "--memory", "64m", "nosuch", check=False)
        assert r.returncode != 0 and "No such container" in r.stderr, r
    finally:
        api.docker("rm", "-f", "upd")
