"""`POST /build`'s half that lives in the image layer: docker's query parameters to
build options, and the build as docker's JSON progress stream (the server only has
to pass the request body and write the messages)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.image.build.dockerapi import options_from_query, stream
from tests.lib.build import Cove


def _tar(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_query_to_options() -> None:
    body = io.BytesIO()
    o = options_from_query({"t": "app:1", "dockerfile": "sub/Dockerfile",
                            "buildargs": json.dumps({"A": "1", "B": None}),
                            "labels": json.dumps({"l": "v"}), "target": "final",
                            "nocache": "1", "pull": "true", "networkmode": "default",
                            "q": "1"}, body)
    assert (o.context, o.stdin, o.dockerfile, o.tags) == ("-", body, "sub/Dockerfile",
                                                          ["app:1"])
    assert (o.build_args, o.labels, o.target, o.no_cache, o.pull, o.network) == \
        ({"A": "1"}, {"l": "v"}, "final", True, True, "none")
    with pytest.raises(CoveError, match="remote contexts are not supported"):
        options_from_query({"remote": "https://example.com/x.git"}, body)
    with pytest.raises(CoveError, match="buildargs: not a JSON object"):
        options_from_query({"buildargs": "A=1"}, body)


def test_stream(cove: Cove, tmp_path: Path) -> None:
    body = _tar({"Dockerfile": "FROM busybox\nRUN echo streamed\n"})
    msgs = list(stream(cove.store(), options_from_query({"t": "api-built"}, body)))
    lines = [m["stream"] for m in msgs if "stream" in m]
    assert "Step 2/2 : RUN echo streamed\n" in lines and "streamed\n" in lines
    image_id = msgs[-1]["aux"]["ID"]
    assert cove.store().config_digest(cove.store().resolve("api-built")) == image_id
    bad = list(stream(cove.store(), options_from_query(
        {}, _tar({"Dockerfile": "FROM busybox\nRUN exit 4\n"}))))
    assert bad[-1]["error"].startswith("Dockerfile:2: RUN exit 4: returned a non-zero "
                                       "code: 4")
