"""`cove build` end to end: images built from Dockerfiles with the built-in busybox
image as base, inspected (config, history, layer contents, owners, modes) and run with
`cove run --network none`; the cache; multi-stage builds and --target."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from tests.lib.build import Cove, write

FULL = """\
# escape=\\
FROM busybox
ARG GREETING=hello
ARG UNSET
ENV APP=/app \\
    MODE=prod
LABEL org.example.name="demo app" version=1
WORKDIR $APP
COPY --chmod=0750 tool.sh bin/
COPY --chown=daemon:daemon data/ data/
COPY *.txt notes/
RUN echo "$GREETING $MODE ${UNSET:-none}" > built.txt && chown daemon built.txt
RUN <<EOF
echo heredoc > /app/heredoc.txt
rm /etc/hostname
EOF
COPY <<EOT /app/inline.txt
inline text
EOT
SHELL ["/bin/sh", "-ec"]
RUN rm -r /root && mkdir /root && echo 1 > /root/x
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost:8080 || exit 1
ONBUILD RUN echo triggered
USER daemon
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/built.txt /app/heredoc.txt /app/inline.txt"]
"""


def _ctx(tmp: Path) -> Path:
    return write(tmp / "ctx", {"Dockerfile": FULL, "tool.sh": "#!/bin/sh\necho tool\n",
                               "data/a": "A", "data/sub/b": "B", "one.txt": "1",
                               "two.txt": "2", "skip.md": "no"})


def test_full_single_stage(cove: Cove, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    r = cove("build", "-t", "demo:1", "--build-arg", "GREETING=hi", "--label", "extra=yes",
             str(ctx))
    assert "Step 1/22 : FROM busybox" in r.stdout
    assert "Successfully tagged docker.io/library/demo:1" in r.stdout
    cfg = cove.config("demo:1")
    c = cfg["config"]
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["cat /app/built.txt /app/heredoc.txt /app/inline.txt"]
    assert "APP=/app" in c["Env"] and "MODE=prod" in c["Env"]
    assert not any(e.startswith("GREETING=") for e in c["Env"])   # ARG stays out
    assert c["WorkingDir"] == "/app" and c["User"] == "daemon"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert c["Labels"] == {"org.example.name": "demo app", "version": "1", "extra": "yes"}
    assert c["StopSignal"] == "SIGTERM"
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost:8080 || exit 1"],
                                "Interval": 5_000_000_000, "Retries": 2}
    assert c["OnBuild"] == ["RUN echo triggered"]
    assert c["Shell"] == ["/bin/sh", "-ec"]
    # history: the base's entry, then one per instruction; layers for COPY/RUN only
    hist = cfg["history"][1:]
    assert len(hist) == 21
    assert [h.get("empty_layer", False) for h in hist].count(False) == 7
    assert len(cfg["rootfs"]["diff_ids"]) == 8
    assert hist[9]["created_by"].startswith("|1 GREETING=hi /bin/sh -c echo")
    layers = cove.layer_members("demo:1")
    tool = layers[1]["app/bin/tool.sh"]
    assert (tool.mode, tool.uid, tool.gid) == (0o750, 0, 0)
    data = layers[2]
    assert {n for n in data if n.startswith("app/data")} == {
        "app/data", "app/data/a", "app/data/sub", "app/data/sub/b"}
    assert (data["app/data/sub/b"].uid, data["app/data/sub/b"].gid) == (1, 1)
    assert set(layers[3]) >= {"app/notes/one.txt", "app/notes/two.txt"}
    assert "app/notes/skip.md" not in layers[3]
    assert layers[4]["app/built.txt"].uid == 1
    assert "etc/.wh.hostname" in layers[5]                 # a deletion: a whiteout
    assert "root/.wh..wh..opq" in layers[7]               # a replaced dir: opaque
    assert not any(n in layers[4] for n in ("proc", "dev", "sys"))  # mount points
    r = cove("run", "--rm", "--network", "none", "demo:1")
    assert r.stdout == "hi prod none\nheredoc\ninline text\n"
    r = cove("run", "--rm", "--network", "none", "demo:1", "ls -ln /app/bin/tool.sh; id -u;"
             " cat /etc/hostname 2>&1 || true; cat /root/x; ls /root")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("-rwxr-x---") and lines[1] == "1"
    assert lines[-2:] == ["1", "x"]
    # a child image runs the ONBUILD trigger
    write(tmp_path / "child", {"Dockerfile": "FROM demo:1\nUSER root\nRUN id -u\n"})
    r = cove("build", "-t", "child", str(tmp_path / "child"))
    assert "RUN echo triggered" in r.stdout and "triggered\n" in r.stdout
    assert "OnBuild" not in cove.config("child")["config"]


def _steps(out: str) -> list[str]:
    """For each layer step, "CACHED" or "built"."""
    marks = []
    for line in out.splitlines():
        if line.startswith(" ---> ") and line != " ---> done":
            marks.append("CACHED" if line == " ---> CACHED" else "built")
    return marks


def test_cache_rebuilds_from_the_changed_copy_on(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN echo one > /one\nCOPY a /a\nCOPY dir /ctx/\n"
                      "RUN cat /a /ctx/b > /ab\nCOPY c /c\n",
        "a": "a1\n", "dir/b": "b1\n", "c": "c1\n", "dir/ignored.log": "x",
        ".dockerignore": "**/*.log\n"})
    r1 = cove("build", "-t", "c:1", str(ctx))
    id1 = cove.config("c:1")
    assert _steps(r1.stdout) == ["built"] * 5
    r2 = cove("build", "-q", "-t", "c:2", str(ctx))
    r2v = cove("build", "-t", "c:2", str(ctx))
    assert _steps(r2v.stdout) == ["CACHED"] * 5
    assert cove.config("c:2") == id1
    assert r2.stdout.strip() == cove.store().config_digest(cove.store().resolve("c:1"))
    # an ignored file is out of the context and of the cache key
    (ctx / "dir/ignored.log").write_text("changed")
    assert _steps(cove("build", str(ctx)).stdout) == ["CACHED"] * 5
    # changing the late-copied file rebuilds only its step
    (ctx / "c").write_text("c2\n")
    assert _steps(cove("build", str(ctx)).stdout) == ["CACHED"] * 4 + ["built"]
    # changing `a` rebuilds from its COPY on, not the RUN before it
    (ctx / "a").write_text("a2\n")
    r = cove("build", "-t", "c:3", str(ctx))
    assert _steps(r.stdout) == ["CACHED", "built", "built", "built", "built"]
    assert cove("run", "--rm", "--network", "none", "c:3", "cat", "/ab").stdout == "a2\nb1\n"
    # --no-cache runs everything again
    assert _steps(cove("build", "--no-cache", str(ctx)).stdout) == ["built"] * 5


def test_multi_stage_target_and_copy_from(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": """\
ARG BASE=busybox
FROM $BASE AS builder
RUN mkdir -p /out && echo built > /out/result && chown 1:1 /out/result
FROM busybox AS unused
RUN echo never-built && exit 1
FROM builder AS second
RUN echo more > /out/more
FROM busybox
COPY --from=second /out/ /app/
COPY --from=0 /out/result /single
COPY --from=busybox /etc/passwd /passwd.copy
CMD ["cat", "/app/result", "/app/more"]
"""})
    r = cove("build", "-t", "ms", str(ctx))
    assert "never-built" not in r.stdout
    assert cove("run", "--rm", "--network", "none", "ms").stdout == "built\nmore\n"
    layers = cove.layer_members("ms")
    assert layers[-3]["app/result"].uid == 1     # --from keeps owners
    assert "single" in layers[-2] and "passwd.copy" in layers[-1]
    # --target builds only what the target needs
    r = cove("build", "--target", "builder", "-t", "only-builder", str(ctx))
    assert "Step 1/2 : FROM $BASE AS builder" in r.stdout
    assert "more" not in r.stdout and "never-built" not in r.stdout
    assert len(cove.config("only-builder")["rootfs"]["diff_ids"]) == 2
    # scratch: the image is only what is copied in
    write(ctx, {"Dockerfile": "FROM scratch\nCOPY --from=busybox /bin/busybox /bin/\n"
                              'CMD ["/bin/busybox", "echo", "from scratch"]\n'})
    cove("build", "-t", "scratch-app", str(ctx))
    assert set(cove.layer_members("scratch-app")[0]) == {"bin", "bin/busybox"}
    assert cove("run", "--rm", "--network", "none", "scratch-app").stdout == "from scratch\n"


def test_add_tar_globs_and_url(cove: Cove, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("pkg/one", b"1"), ("pkg/two", b"22")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.uid, ti.mode = len(data), 7, 0o600
            tf.addfile(ti, io.BytesIO(data))
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nADD files.tgz /opt/\nADD --chown=2:3 plain /opt/p\n"
                      "COPY sub/*/*.c /src/\n",
        "files.tgz": buf.getvalue(), "plain": "plain", "sub/a/x.c": "x", "sub/b/y.c": "y",
        "sub/b/z.h": "z"})
    cove("build", "-t", "add", str(ctx))
    layers = cove.layer_members("add")
    one = layers[1]["opt/pkg/one"]
    assert (one.uid, one.mode) == (7, 0o600)
    assert (layers[2]["opt/p"].uid, layers[2]["opt/p"].gid) == (2, 3)
    assert {n for n in layers[3] if n.startswith("src/")} == {"src/x.c", "src/y.c"}
    (ctx / "Dockerfile").write_text("FROM busybox\nADD https://example.com/x /x\n")
    r = cove("build", str(ctx), check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("cove: Dockerfile:2: ADD https://example.com/x: URLs are "
                               "not supported")
    assert len(r.stderr.splitlines()) == 1


def test_context_from_tar_on_stdin_and_containerfile(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Containerfile": "FROM busybox\nCOPY f /f\n",
                                   "Dockerfile": "FROM busybox\nRUN exit 1\n", "f": "via tar"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for n in os.listdir(ctx):
            tf.add(ctx / n, arcname=n)
    cove("build", "-t", "stdin", "-", input=buf.getvalue())
    assert cove("run", "--rm", "--network", "none", "stdin", "cat", "/f").stdout == "via tar"


def test_run_is_confined(cove: Cove, tmp_path: Path) -> None:
    """RUN gets docker's capability set, Docker's seccomp filter, no new privileges and
    (by default) a network namespace with only loopback."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN grep -E "
                                                 "'^(CapBnd|Seccomp|NoNewPrivs):' "
                                                 "/proc/self/status; tail -n +3 "
                                                 "/proc/net/dev | cut -d: -f1\n"})
    out = cove("build", str(ctx)).stdout
    assert "CapBnd:\t00000000a80425fb" in out      # docker's 14 default capabilities
    assert "Seccomp:\t2" in out and "NoNewPrivs:\t1" in out
    ifaces = out.split("Seccomp:\t2\n", 1)[1].split(" --->")[0].split()
    assert ifaces == ["lo"]


def test_dockerignore_keeps_files_out(cove: Cove, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
        ".dockerignore": "# secrets stay home\nsecret*\n!secret.keep\n**/*.o\nbuild\n",
        "secret.key": "k", "secret.keep": "kept", "src/a.c": "a", "src/a.o": "o",
        "build/out": "x", "README": "r"})
    cove("build", "-t", "ign", str(ctx))
    names = {n for n in cove.layer_members("ign")[1] if n.startswith("ctx/")}
    assert names == {"ctx/Dockerfile", "ctx/.dockerignore", "ctx/secret.keep", "ctx/src",
                     "ctx/src/a.c", "ctx/README"}
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY secret.key /k\n")
    r = cove("build", str(ctx), check=False)
    assert r.stderr == "cove: Dockerfile:2: COPY secret.key: secret.key: excluded by " \
                       ".dockerignore\n"
