"""The issue's multi-stage build: a builder stage compiles a small C program with
Debian's gcc (an image made from the host's gcc packages, tests/lib/hostgcc.py), a
final `FROM busybox` stage copies the static binary out of it; the image runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lib import hostgcc
from tests.lib.build import Cove, write

DOCKERFILE = """\
FROM localhost/hostgcc AS builder
WORKDIR /src
COPY hello.c .
RUN gcc -static -O2 -o /hello hello.c && /hello builder

FROM busybox
COPY --from=builder /hello /usr/local/bin/hello
ENTRYPOINT ["/usr/local/bin/hello"]
CMD ["final"]
"""

HELLO = '#include <stdio.h>\nint main(int c, char **v) { printf("hello, %s\\n", ' \
        'c > 1 ? v[1] : "?"); return 0; }\n'


def test_multi_stage_gcc(cove: Cove, tmp_path: Path) -> None:
    try:
        hostgcc.build(cove.store(), "localhost/hostgcc:latest", tmp_path / "gcc")
    except hostgcc.Unavailable as e:
        pytest.skip(str(e))
    ctx = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "hello.c": HELLO})
    r = cove("build", "-t", "hello", str(ctx), timeout=300)
    assert "hello, builder" in r.stdout
    assert cove("run", "--rm", "--network", "none", "hello").stdout == "hello, final\n"
    cfg = cove.config("hello")
    assert len(cfg["rootfs"]["diff_ids"]) == 2          # busybox + the binary only
    layer = cove.layer_members("hello")[1]
    assert layer["usr/local/bin/hello"].mode == 0o755
