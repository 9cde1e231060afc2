"""`docker build` (docker 20.10's classic builder, the CLI sending the context as a
tar to POST /build) through `cove serve`: the image is built by cove's builder, tagged,
runs, and a failing step is the build's error, with nothing tagged."""

from __future__ import annotations

from pathlib import Path

from tests.lib.api import Api


def test_docker_build_through_the_api(api: Api, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greeting").write_text("hello from the build\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "ARG WHO=nobody\n"
        "COPY greeting /greeting\n"
        "RUN echo \"built for $WHO\" > /who\n"
        "ENV MODE=api\n"
        "CMD [\"sh\", \"-c\", \"cat /greeting /who; echo $MODE\"]\n")
    r = api.docker("build", "-t", "apibuilt:1", "--build-arg", "WHO=docker", str(ctx),
                   timeout=180)
    assert "COPY greeting /greeting" in r.stdout, r.stdout
    out = api.docker("run", "--rm", "apibuilt:1").stdout
    assert out == "hello from the build\nbuilt for docker\napi\n"
    # unchanged: every step from the cache, the same image
    again = api.docker("build", "-q", "-t", "apibuilt:1", "--build-arg", "WHO=docker",
                       str(ctx), timeout=120).stdout.strip()
    assert again == api.docker("image", "inspect", "-f", "{{.Id}}",
                               "apibuilt:1").stdout.strip()
    # a failing RUN: the build's error, nothing tagged
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN exit 3\n")
    bad = api.docker("build", "-t", "apibroken:1", str(ctx), check=False, timeout=120)
    assert bad.returncode != 0 and "exit" in bad.stderr.lower(), bad.stderr
    assert api.docker("images", "-q", "apibroken:1").stdout.strip() == ""
    api.docker("rmi", "apibuilt:1")
