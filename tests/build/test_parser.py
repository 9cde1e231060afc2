"""The Dockerfile parser, variable substitution and .dockerignore matching (no
containers: these run as any user)."""

from __future__ import annotations

import pytest

from cove.errors import CoveError
from cove.image.build.ignore import Ignore
from cove.image.build.parser import ParseError, expand, parse, words


def test_instructions_continuations_comments() -> None:
    df = parse("# syntax=docker/dockerfile:1\n"
               "FROM busybox AS base\n"
               "# a comment\n"
               "RUN echo a \\\n"
               "  # comment inside\n"
               "  && echo b\n"
               "\n"
               "copy --chown=1:2 --from=base a b\n"
               'CMD ["sh", "-c", "x"]\n')
    cmds = [(i.cmd, i.line) for i in df.instructions]
    assert cmds == [("FROM", 2), ("RUN", 4), ("COPY", 8), ("CMD", 9)]
    assert df.instructions[1].rest == "echo a   && echo b"
    assert df.instructions[2].flags == {"chown": ["1:2"], "from": ["base"]}
    assert df.instructions[2].rest == "a b"
    assert df.instructions[3].json_form == ["sh", "-c", "x"]


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\nCOPY c:\\x d\n")
    assert df.escape == "`"
    assert df.instructions[1].rest == "echo a   b"
    assert df.instructions[2].rest == "c:\\x d"


def test_heredocs() -> None:
    df = parse("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\n"
               "COPY <<-'END' /f\n\thello $X\n\tEND\nCMD x\n")
    run, cp, cmd = df.instructions[1:]
    assert run.heredocs[0].content == "echo one\necho two\n"
    assert cp.heredocs[0].content == "hello $X\n" and not cp.heredocs[0].expand
    assert (cmd.cmd, cmd.line) == ("CMD", 9)


def test_unknown_instruction_names_file_and_line() -> None:
    with pytest.raises(ParseError) as e:
        parse("FROM busybox\n\nFROB x\n", "Containerfile")
    assert str(e.value) == "Containerfile:3: unknown instruction: FROB"
    with pytest.raises(ParseError, match="heredoc <<EOF is not terminated"):
        parse("FROM busybox\nRUN <<EOF\necho\n")


def test_expand_and_words() -> None:
    env = {"A": "1", "E": "", "S": "x y"}
    assert expand("$A-${A}-${B:-d}-${E:-e}-${E-f}-${A:+p}-${B:+q}", env) == "1-1-d-e--p-"
    assert expand("\\$A '$A'", env) == "$A '$A'"
    assert words('a "b c" d\\ e \'$A\' $S', env=env) == ["a", "b c", "d e", "$A", "x y"]
    with pytest.raises(CoveError):
        words('a "b')


@pytest.mark.parametrize("rel,ignored", [
    ("secret.txt", True), ("logs/a.log", True), ("x/y/a.log", True), ("keep.log", False),
    ("build", True), ("build/out/bin", True), ("build/keep", False), ("src/a.c", False),
    ("Dockerfile", False), ("tmp1", True), ("tmp12", False),
])
def test_dockerignore(rel: str, ignored: bool) -> None:
    ig = Ignore(["# comment", "secret.txt", "**/*.log", "!keep.log", "/build",
                 "!build/keep", "tmp?", ""])
    assert ig.ignored(rel) is ignored
