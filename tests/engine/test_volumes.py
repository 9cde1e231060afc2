"""Named volumes, binds and tmpfs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lib.engine import Cove


def test_named_volume_outlives_container(cove: Cove, tmp_path: Path) -> None:
    cove("volume", "create", "data")
    assert [v["Name"] for v in json.loads(cove("volume", "ls", "--format", "json").stdout)] \
        == ["data"]
    cove("run", "--name", "w", "--network", "none", "-v", "data:/data", "busybox", "sh", "-c",
         "echo kept > /data/f")
    assert "in use" in cove("volume", "rm", "data", check=False).stderr
    cove("rm", "w")
    r = cove("run", "--rm", "--network", "none", "--mount", "type=volume,source=data,"
             "target=/d,readonly", "busybox", "sh", "-c", "cat /d/f; touch /d/x || echo ro")
    assert r.stdout.startswith("kept\n") and r.stdout.endswith("ro\n")
    host = tmp_path / "bind"
    host.mkdir()
    cove("run", "--rm", "--network", "none", "-v", f"{host}:/b", "busybox", "sh", "-c",
         "echo bound > /b/g")
    assert (host / "g").read_text() == "bound\n"
    mp = json.loads(cove("volume", "inspect", "data").stdout)[0]["Mountpoint"]
    assert Path(mp, "f").read_text() == "kept\n"
    cove("volume", "create", "other")
    assert sorted(cove("volume", "prune").stdout.split()) == ["data", "other"]
    assert json.loads(cove("volume", "ls", "--format", "json").stdout) == []
