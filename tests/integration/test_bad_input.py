"""Bad input: one clear line (`cove-runtime: <what>: <why>`), a non-zero exit (runc's
code, 1), a message in --log too, and nothing left behind (the `env` fixture checks
mounts, processes, cgroups and state entries after every test)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Env
from tests.helpers import base_config


def _cfg(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    c = base_config(["true"])
    edit(c)
    return c


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(c: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        d = c
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if value is _DEL:
            del d[last]
        else:
            d[last] = value
    return edit


_DEL = object()

CONFIG_CASES = {
    "uid-not-int": (_set("process.user.uid", "0"), "process.user.uid: expected integer"),
    "args-missing": (_set("process.args", _DEL), "process.args: required field is missing"),
    "args-empty": (_set("process.args", []), "process.args: must not be empty"),
    "env-not-strings": (_set("process.env", [1]), "process.env[0]: expected string"),
    "no-oci-version": (_set("ociVersion", _DEL), "ociVersion: required field is missing"),
    "oci-version-2": (_set("ociVersion", "2.0.0"), "ociVersion: unsupported version"),
    "no-root": (_set("root", _DEL), "root: required field is missing"),
    "unknown-namespace": (_set("linux.namespaces", [{"type": "foo"}]),
                          "linux.namespaces[0].type: unknown namespace type 'foo'"),
    "dup-namespace": (_set("linux.namespaces", [{"type": "pid"}, {"type": "pid"}]),
                      "duplicate namespace"),
    "unknown-cap": (_set("process.capabilities.bounding", ["CAP_FOO"]),
                    "process.capabilities.bounding[0]: unknown capability 'CAP_FOO'"),
    "bad-rlimit": (_set("process.rlimits", [{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]),
                   "unknown rlimit"),
    "relative-cwd": (_set("process.cwd", "tmp"), "process.cwd: must be an absolute path"),
    "missing-rootfs": (_set("root.path", "nosuchdir"), "rootfs directory does not exist"),
    "mount-no-dest": (_set("mounts", [{"type": "tmpfs", "source": "tmpfs"}]),
                      "mounts[0].destination: required field is missing"),
    "bad-bind-source": (_set("mounts", [{"destination": "/x", "type": "bind",
                                         "source": "/nonexistent/src", "options": ["bind"]}]),
                        "No such file or directory"),
    "host-sysctl": (_set("linux.sysctl", {"kernel.panic": "1"}), "not a namespaced sysctl"),
    "exec-not-found": (_set("process.args", ["/nosuch"]), "exec: '/nosuch'"),
    "bad-memory-type": (_set("linux.resources.memory", {"limit": "lots"}),
                        "linux.resources.memory.limit: expected integer"),
    "bad-seccomp-action": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_BOGUS"}),
                           "unknown seccomp action"),
    "hostname-without-uts": (
        lambda c: (c.__setitem__("hostname", "x"),
                   c["linux"].__setitem__("namespaces", [{"type": "pid"}, {"type": "mount"}])),
        "hostname: setting the hostname needs a new uts namespace"),
    "bad-ns-path": (_set("linux.namespaces", [{"type": "network", "path": "/nonexistent/ns"},
                                              {"type": "mount"}, {"type": "uts"}]),
                    "network namespace /nonexistent/ns"),
    "mappings-without-userns": (_set("linux.uidMappings",
                                     [{"containerID": 0, "hostID": 1000, "size": 1}]),
                                "mappings given without a user namespace"),
}


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert lines[0].startswith("cove-runtime: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(env: Env, case: str) -> None:
    edit, expect = CONFIG_CASES[case]
    b = env.bundle(_cfg(edit))
    cid = env.id()
    log = env.tmp / "log.json"
    p = env.rt("--log", str(log), "--log-format", "json", "create", "--bundle", str(b.path), cid)
    assert p.returncode == 1
    line = _one_line(p.stderr)
    assert expect in line
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and expect in entry["msg"]
    assert env.rt("state", cid).returncode == 1


def test_malformed_json(env: Env) -> None:
    b = env.bundle()
    (b.path / "config.json").write_text('{"ociVersion": "1.0.0", ')
    p = env.rt("create", "--bundle", str(b.path), env.id())
    assert p.returncode == 1
    assert "config.json: invalid JSON" in _one_line(p.stderr)


def test_missing_config(env: Env) -> None:
    d = env.tmp / "empty"
    d.mkdir()
    p = env.rt("create", "--bundle", str(d), env.id())
    assert p.returncode == 1 and "config.json" in _one_line(p.stderr)


@pytest.mark.parametrize("bad", ["a/b", "..", ".", "x\x01y", "a b", ""])
def test_bad_ids(env: Env, bad: str) -> None:
    b = env.bundle()
    p = env.rt("create", "--bundle", str(b.path), bad)
    assert p.returncode == 1
    assert "container id" in _one_line(p.stderr)


def test_duplicate_id_and_double_start(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "100"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    p = env.rt("create", "--bundle", str(b.path), cid)
    assert p.returncode == 1 and "already exists" in _one_line(p.stderr)
    env.rt("start", cid, check=True)
    p = env.rt("start", cid)
    assert p.returncode == 1 and "running" in _one_line(p.stderr)
    p = env.rt("delete", cid)
    assert p.returncode == 1 and "not stopped" in _one_line(p.stderr)
    env.rt("delete", "--force", cid, check=True)


def test_unknown_things(env: Env) -> None:
    assert "no such command" in _one_line(env.rt("frobnicate").stderr)
    assert "flag provided but not defined" in _one_line(env.rt("create", "--nope", "x").stderr)
    assert "does not exist" in _one_line(env.rt("state", "nosuch").stderr)
    assert "does not exist" in _one_line(env.rt("delete", "nosuch").stderr)
    assert "unknown signal" in _one_line(env.rt("kill", "nosuch", "SIGFOO").stderr)
    p = env.rt("--systemd-cgroup", "create", "--bundle", str(env.tmp), "x")
    assert p.returncode == 1 and "systemd" in _one_line(p.stderr)
