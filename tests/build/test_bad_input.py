"""Bad Dockerfiles and contexts: one line `cove: <file>:<line>: <why>`, exit status 1,
no image tagged, no container, mount or runtime state left (the fixture checks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lib.build import Cove, write
from tests.lib.host import mounts_under
from tests.lib.paths import RUNTIME


def _fails(cove: Cove, ctx: Path, *extra: str) -> str:
    r = cove("build", "-t", "bad", *extra, str(ctx), check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cove: "), r.stderr
    assert "Traceback" not in r.stderr
    assert "bad" not in cove("images").stdout
    return lines[0]


@pytest.mark.parametrize("dockerfile,expected", [
    ("FROM busybox\nRUN true\nFROBNICATE x\n",
     "cove: Dockerfile:3: unknown instruction: FROBNICATE"),
    ("RUN true\n", "cove: Dockerfile:1: RUN comes before any FROM (only ARG may)"),
    ("FROM busybox\nCOPY onlyone\n",
     "cove: Dockerfile:2: COPY: requires at least one source and a destination"),
    ("FROM busybox\nCOPY a b c\n", "cove: Dockerfile:2: COPY: with more than one source "
                                   "file, the destination must be a directory and end with a /"),
    ("FROM busybox\nEXPOSE http\n", "cove: Dockerfile:2: EXPOSE: invalid port 'http'"),
    ("FROM busybox\nSHELL sh -c\n",
     "cove: Dockerfile:2: SHELL requires the arguments as a JSON array"),
    ("FROM busybox\nRUN --mount=type=cache,target=/c true\n",
     "cove: Dockerfile:2: RUN --mount=type=cache,target=/c: type=cache is not supported "
     "(only type=secret)"),
    ("FROM busybox\nRUN --security=insecure true\n",
     "cove: Dockerfile:2: RUN --security: not supported (BuildKit's RUN flags: only "
     "--network and --mount=type=secret are)"),
    ("FROM busybox\nRUN <<EOF\necho\n", "cove: Dockerfile:2: RUN: heredoc <<EOF is not "
                                        "terminated"),
])
def test_bad_dockerfiles(cove: Cove, tmp_path: Path, dockerfile: str, expected: str) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": dockerfile, "a": "a", "b": "b"})
    assert _fails(cove, ctx) == expected


def test_unresolvable_from(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox AS ok\n"
                                                 "FROM 127.0.0.1:1/nope:1\n"})
    line = _fails(cove, ctx)
    assert line.startswith("cove: Dockerfile:2: FROM 127.0.0.1:1/nope:1: "), line


def test_failed_run_names_step_and_code(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\n"
                                                 "RUN echo first; echo last words; exit 3\n"})
    line = _fails(cove, ctx)
    assert line.startswith("cove: Dockerfile:2: RUN echo first; echo last words; exit 3: "
                           "returned a non-zero code: 3 (last output: "), line
    assert line.endswith("first | last words)"), line


def test_copy_outside_the_context(cove: Cove, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host secret")
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY ../secret /s\n"})
    assert _fails(cove, ctx) == "cove: Dockerfile:2: COPY ../secret: ../secret: outside " \
                                "the build context"
    os.symlink("/etc", ctx / "etc-link")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY etc-link/passwd /p\n")
    assert _fails(cove, ctx) == "cove: Dockerfile:2: COPY etc-link/passwd: " \
                                "etc-link/passwd: symlink to /etc leaves the build context"
    os.symlink("../secret", ctx / "up-link")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY up-link /p\n")
    assert "up-link: symlink to ../secret leaves the build context" in _fails(cove, ctx)


def test_symlink_loop(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY loop/x /x\n"})
    os.symlink("loop2", ctx / "loop")
    os.symlink("loop", ctx / "loop2")
    assert _fails(cove, ctx) == "cove: Dockerfile:2: COPY loop/x: loop/x: symlink loop " \
                                "in the build context"


def test_bad_flags(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\n"})
    assert _fails(cove, ctx, "--target", "nosuch") == \
        "cove: --target nosuch: no stage of that name in the Dockerfile"
    assert _fails(cove, ctx, "-f", "Nope") == "cove: -f Nope: no such file"


def test_ctrl_c_leaves_nothing(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started; sleep 987\n"})
    env = {**os.environ, "COVE_RUNTIME": RUNTIME, "PYTHONPATH": str(Path(RUNTIME).parents[2])}
    p = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "build",
                          "-t", "interrupted", str(ctx)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    assert p.stdout is not None
    deadline = time.monotonic() + 30
    for line in p.stdout:
        if line.strip() == "started" or time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 130
    assert "interrupted" not in cove("images").stdout
    assert mounts_under(cove.root) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 987" not in ps


def test_huge_tar_context(cove: Cove, tmp_path: Path) -> None:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\n"), ("big", b"x" * 100_000)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    os.environ["COVE_BUILD_MAX_CONTEXT"] = "50000"
    try:
        r = cove("build", "-t", "bad", "-", input=buf.getvalue(), check=False)
    finally:
        del os.environ["COVE_BUILD_MAX_CONTEXT"]
    assert r.returncode == 1
    assert r.stderr.startswith("cove: context -: ") and "size limit of 50000" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert os.listdir(os.path.join(cove.root, "tmp")) == []
