"""`docker build --network bridge` through `cove serve` (POST /build's
`networkmode=bridge`): RUN steps on the engine's default bridge network, as `cove build
--network bridge`. The server, and so the build and its bridge, run inside the network
namespace the `api` fixture makes; never on the host's network."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.lib.api import Api


def test_build_network_bridge(api: Api, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN ip -4 -o addr show eth0 && ping -c1 -W3 "
        "$(ip route | awk '/^default/ {print $3}') >/dev/null && echo gw-ok\n")
    r = api.docker("build", "--no-cache", "--network", "bridge", "-t", "brbuilt", str(ctx),
                   timeout=180)
    assert "eth0    inet 10.88.0." in r.stdout and "gw-ok" in r.stdout, r.stdout
    # the namespace the build's steps joined is gone, its address given back
    with open(os.path.join(api.root, "networks", "bridge.json")) as f:
        assert json.load(f)["Containers"] == {}
    assert not [n for n in os.listdir(os.path.join(api.root, "containers"))
                if n.startswith("buildnet-")]
    # without the flag (docker's networkmode=default): no network, loopback only
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN ip -o link | grep -c ': '\n")
    r = api.docker("build", "--no-cache", "-t", "nonet", str(ctx), timeout=180)
    assert "\n1\n" in r.stdout, r.stdout
    api.docker("rmi", "brbuilt", "nonet")
