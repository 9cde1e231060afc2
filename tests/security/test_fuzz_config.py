"""Property-based fuzzing of `create` with hypothesis: random config.json documents and
mutations of runc's default config. Each must end in a created container (then deleted)
or one error line `cove-runtime: <what>: <why>` with a non-zero exit, never a traceback
or a hang, and leave nothing behind: no state entry, mount, process or cgroup.

What the fuzzer may not change, so that a bug cannot reach the host while it is being
found (the runtime's own checks for these are in test_bad_input.py): no hooks (they run
host commands), the cgroupsPath (a fresh one per case: a random path could name a host
cgroup), the rootfs path (the bundle's own copy), namespace paths (none: no joining the
host's namespaces) and bind-mount sources (a scratch directory of the test).

COVE_FUZZ_EXAMPLES sets the number of cases (default 150); a case runs
`create` (and `delete --force`), ~0.15 s each here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lib.bundles import base_config
from tests.lib.host import leftovers
from tests.lib.runtime import Env

EXAMPLES = int(os.environ.get("COVE_FUZZ_EXAMPLES", "150"))

_INTERESTING_INTS = [-1, 0, 1, 7, 65534, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
                     2**63, 2**64, -(2**63)]
_INTERESTING_STRS = ["", "/", ".", "..", "../../..", "/proc/self/exe", "/dev/null", "rw",
                     "bind", "tmpfs", "proc", "CAP_SYS_ADMIN", "CAP_FOO", "SCMP_ACT_ERRNO",
                     "SCMP_ACT_NOTIFY", "x" * 300, "a\nb", "\u00e9", "nosuid,nodev",
                     "/dev/../../etc", "-1", "0", "4294967295"]

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(_INTERESTING_INTS), st.floats(), st.text(max_size=12),
    st.sampled_from(_INTERESTING_STRS))
values = st.recursive(
    leaves, lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(
        ["type", "source", "destination", "options", "path", "names", "action", "uid",
         "gid", "limit", "hostID", "containerID", "size"]), kids, max_size=4),
    max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any] | Any:
    """runc's default config with 1-4 random edits (replace, delete, add), or now and
    then a random JSON document of any shape."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    cfg: Any = base_config(["true"])
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(cfg)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if op == "replace":
                cfg = draw(values)
            continue
        parent = cfg
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        if op == "replace":
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(values)
        elif isinstance(parent[last], list):
            parent[last].insert(draw(st.integers(0, len(parent[last]))), draw(values))
    return cfg


def _pin(cfg: Any, scratch: Path, cgpath: str) -> Any:
    """The safety envelope of the module docstring, applied after the mutations."""
    if not isinstance(cfg, dict):
        return cfg
    cfg.pop("hooks", None)
    if isinstance(cfg.get("root"), dict):
        cfg["root"]["path"] = "rootfs"
    lin = cfg.get("linux")
    if isinstance(lin, dict):
        lin["cgroupsPath"] = cgpath
        if isinstance(lin.get("namespaces"), list):
            for ns in lin["namespaces"]:
                if isinstance(ns, dict):
                    ns.pop("path", None)
    if isinstance(cfg.get("mounts"), list):
        for m in cfg["mounts"]:
            if not isinstance(m, dict):
                continue
            opts = m.get("options")
            bind = m.get("type") == "bind" or (
                isinstance(opts, list) and any(o in ("bind", "rbind") for o in opts))
            if bind or m.get("type") not in ("proc", "tmpfs", "sysfs", "devpts", "mqueue",
                                              "cgroup", "cgroup2", None):
                m["source"] = str(scratch)
    return cfg


def _cgroups(cid: str) -> list[str]:
    """The pinned cgroupsPath, /<cid>, under every hierarchy."""
    return [str(d) for d in Path("/sys/fs/cgroup").glob(f"*/{cid}")] + [
        str(d) for d in Path("/sys/fs/cgroup").glob(cid)]


def test_fuzz_create(env: Env) -> None:
    b = env.bundle()
    scratch = env.tmp / "scratch"
    scratch.mkdir()
    seen = {"created": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(doc=mutated_config(), raw=st.integers(0, 19), junk=st.binary(max_size=40))
    def case(doc: Any, raw: int, junk: bytes) -> None:
        cid = env.id("fz")
        cfg = _pin(doc, scratch, f"/{cid}")
        text = (json.dumps(cfg) if raw else json.dumps(cfg)[: len(junk) * 3] + junk.decode(
            "latin-1"))  # 1 case in 20: cut off and followed by junk
        (b.path / "config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            p = env.rt("create", "--bundle", str(b.path), cid, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"create hung on {text[:2000]!r}")
        lines = p.stderr.strip().splitlines()
        assert "Traceback" not in p.stderr, f"{text[:2000]!r}\n{p.stderr}"
        if p.returncode == 0:
            seen["created"] += 1
            assert all(ln.startswith("cove-runtime: warning: ") for ln in lines), p.stderr
            d = env.rt("delete", "--force", cid)
            assert d.returncode == 0, d.stderr
        else:
            seen["refused"] += 1
            assert len(lines) == 1 and lines[0].startswith("cove-runtime: "), (
                f"{text[:2000]!r}\n{p.stderr!r}")
        left = leftovers(env.tmp, []) + [f"cgroup {d}" for d in _cgroups(cid)]
        assert not left, f"{text[:2000]!r} left {left}"

    case()
    print(f"fuzz: {seen['created'] + seen['refused']} configs, {seen['created']} created, "
          f"{seen['refused']} refused with one line")
    assert seen["created"] and seen["refused"]
