"""The config.json model, JSON I/O without `json`, flags and signals: no root needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cove.cli import flags
from cove.errors import CoveError
from cove.oci import jsonio
from cove.oci.defaults import default_spec
from cove.oci.spec import Spec
from cove.runtime.signals import parse_signal
from tests.lib.paths import ROOT


@pytest.mark.parametrize("doc", [
    {"a": [1, 2.5, True, False, None, "x\u00e9\n\"q\""], "b": {}, "c": [], "d": -3},
    [], {}, "s", 0, 1e100,
])
def test_jsonio_round_trip(doc: object) -> None:
    assert jsonio.loads(jsonio.dumps(doc)) == doc
    assert json.loads(jsonio.dumps(doc, indent=2)) == doc
    assert jsonio.loads(json.dumps(doc)) == doc


def test_jsonio_indent_matches_json() -> None:
    doc = default_spec()
    assert jsonio.dumps(doc, indent=2) == json.dumps(doc, indent=2)


@pytest.mark.parametrize("bad", ["{", "[1,]", '{"a":1}x', "", "nul", '{"a" 1}', b"\xff"])
def test_jsonio_errors(bad: str | bytes) -> None:
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(bad)


def test_runtime_path_imports_stay_small() -> None:
    """The modules on cove-runtime's create path import no re, json, argparse, typing..."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import cove.cli.runtime, "
            "cove.runtime.create, cove.runtime.init, cove.runtime.start, cove.runtime.delete, "
            "cove.runtime.exec, cove.runtime.kill, cove.runtime.cgroups.resolve, "
            "cove.runtime.run, cove.runtime.caller; "
            "print(' '.join(sorted(sys.modules)))")
    mods = set(subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True,
                              text=True, check=True).stdout.split())
    banned = {"re", "json", "argparse", "logging", "subprocess", "dataclasses", "typing",
              "enum", "signal", "shutil", "pathlib", "importlib", "threading"}
    assert not (mods & banned), mods & banned


def _spec(**edits: object) -> Spec:
    d = default_spec()
    d.update(edits)
    return Spec(d)


def test_spec_parses_default() -> None:
    s = _spec()
    assert s.process is not None and s.process.args == ["sh"]
    assert s.linux.ns("pid") is not None and s.linux.ns("user") is None
    assert s.root is not None and s.root.readonly
    assert [m.destination for m in s.mounts][:2] == ["/proc", "/dev"]


@pytest.mark.parametrize(("path", "value", "msg"), [
    ("process.user.uid", "0", "process.user.uid: expected integer"),
    ("process.user.uid", True, "process.user.uid: expected integer"),
    ("process.terminal", "yes", "process.terminal: expected boolean"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1}],
     "process.rlimits[0].hard: required field is missing"),
    ("linux.namespaces", [{"type": "net"}], "linux.namespaces[0].type: unknown namespace"),
    ("linux.devices", [{"type": "x", "path": "/dev/x"}], "linux.devices[0].type"),
    ("linux.sysctl", {"a": 1}, "linux.sysctl.a: expected string"),
    ("linux.rootfsPropagation", "sideways", "linux.rootfsPropagation"),
    ("hooks", {"prestart": [{"path": "rel"}]}, "hooks.prestart[0].path: must be an absolute"),
    ("hooks", {"poststop": [{"path": "/x", "timeout": 0}]}, "hooks.poststop[0].timeout"),
    ("annotations", {"a": 1}, "annotations.a: expected string"),
    ("mounts", [{"destination": "/x", "options": "ro"}], "mounts[0].options: expected array"),
])
def test_spec_errors_name_the_json_path(path: str, value: object, msg: str) -> None:
    d = default_spec()
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[last] = value
    with pytest.raises(CoveError) as e:
        Spec(d)
    assert msg in str(e.value)


def test_spec_parse_reports_invalid_json() -> None:
    with pytest.raises(CoveError) as e:
        Spec.parse(b'{"ociVersion": ')
    assert str(e.value).startswith("config.json: invalid JSON")


def test_flags() -> None:
    spec = {"bundle": "str", "detach": "bool", "preserve-fds": "int", "env": "list"}
    p = flags.parse(["--bundle=/b", "-d", "--preserve-fds", "2", "-e", "A=1", "--env", "B=2", "id",
                 "--not-a-flag"], spec, {"d": "detach", "e": "env"})
    assert p.s("bundle") == "/b" and p.b("detach") and p.i("preserve-fds") == 2
    assert p.lst("env") == ["A=1", "B=2"]
    assert p.args == ["id", "--not-a-flag"]
    assert flags.parse(["-bundle", "x", "--", "-d"], spec).args == ["-d"]
    with pytest.raises(CoveError):
        flags.parse(["--nope"], spec)
    with pytest.raises(CoveError):
        flags.parse(["--preserve-fds", "x"], spec)
    with pytest.raises(CoveError):
        flags.parse(["--bundle"], spec)


@pytest.mark.parametrize(("s", "n"), [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15),
                                      ("RTMIN", 34), ("RTMIN+3", 37), ("RTMAX-1", 63),
                                      ("WINCH", 28)])
def test_signals(s: str, n: int) -> None:
    assert parse_signal(s) == n


@pytest.mark.parametrize("s", ["0", "65", "FOO", "RTMIN+40", ""])
def test_bad_signals(s: str) -> None:
    with pytest.raises(CoveError):
        parse_signal(s)
