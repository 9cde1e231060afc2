"""The Python API: `client.images.build(path=..., tag=...)` as docker-py's, returning
the image and the build's log; the image then runs through the same API."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

import cove as cove_api
from cove.errors import CoveError
from tests.lib.build import Cove, write


def test_images_build(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nARG WHO\n"
                                                 "RUN echo hi $WHO > /greeting\n"
                                                 "CMD [\"cat\", \"/greeting\"]\n"})
    with cove_api.Client(root=cove.root) as client:
        img, logs = client.images.build(path=str(ctx), tag="api:1", buildargs={"WHO": "api"})
        lines = [x.get("stream", "") for x in logs]
        assert "Step 3/4 : RUN echo hi $WHO > /greeting\n" in lines
        assert any(t.endswith("api:1") for t in img.tags)
        out = client.containers.run("api:1", remove=True, network_mode="none")
        assert out == b"hi api\n"
        # a tar context as fileobj; the cache makes it quick
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(ctx / "Dockerfile", arcname="Dockerfile")
        buf.seek(0)
        img2, _ = client.images.build(fileobj=buf, buildargs={"WHO": "api"})
        assert img2.id == img.id
        with pytest.raises(CoveError, match="Dockerfile:3: RUN"):
            write(ctx, {"Dockerfile": "FROM busybox\n\nRUN exit 7\n"})
            client.images.build(path=str(ctx))
