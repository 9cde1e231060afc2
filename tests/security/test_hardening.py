"""Hardening under the default spec (Docker's seccomp profile, runc's capabilities),
from inside a container; the same bundle under Debian's runc gives the same answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import base_config
from tests.lib.runtime import Env
from tests.lib.security import bundle, run, runc

EPERM = 1

# (probe command, expected first output line)
CASES = {
    # EROFS (read-only bind); ENOENT where the kernel has no sysrq/kcore at all.
    "sysrq-trigger": (["probe", "write", "/proc/sysrq-trigger", "h"],
                      "err 30" if os.path.exists("/proc/sysrq-trigger") else "err 2"),
    "kcore-empty": (["probe", "read", "/proc/kcore"],
                    "ok 0" if os.path.exists("/proc/kcore") else "err 2"),
    "mount": (["probe", "mount", "/tmp"], f"err {EPERM}"),
    "unshare-mnt": (["probe", "unshare", "0x20000"], f"err {EPERM}"),
    "unshare-user": (["probe", "unshare", "0x10000000"], f"err {EPERM}"),
    "clone-newuser": (["probe", "clone", "0x10000000"], f"err {EPERM}"),
    "clone-plain": (["probe", "clone", "0"], "ok 0"),
    "keyctl": (["probe", "keyctl"], f"err {EPERM}"),
    "add_key": (["probe", "add_key"], f"err {EPERM}"),
    "init_module": (["probe", "init_module"], f"err {EPERM}"),
    "finit_module": (["probe", "finit_module"], f"err {EPERM}"),
    "raw-socket": (["probe", "raw-socket"], f"err {EPERM}"),
    "vsock": (["probe", "vsock"], f"err {EPERM}"),
    "personality-bad": (["probe", "personality", "0x0400000"], f"err {EPERM}"),
    "personality-query": (["probe", "personality", "0xffffffff"], "ok 0"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_profile_blocks(env: Env, probe_bin: Path, name: str) -> None:
    args, want = CASES[name]
    b = bundle(env, probe_bin, base_config(args))
    _code, out, err = run(env.rt, env, b)
    assert out.splitlines()[:1] == [want], (out, err)


@pytest.mark.parametrize("name", ["sysrq-trigger", "kcore-empty", "mount", "unshare-user",
                                  "keyctl", "finit_module", "raw-socket", "clone-newuser"])
def test_default_profile_runc(env: Env, probe_bin: Path, name: str) -> None:
    args, want = CASES[name]
    b = bundle(env, probe_bin, base_config(args), name="r")
    _code, out, err = run(runc(env), env, b)
    assert out.splitlines()[:1] == [want], (out, err)


def test_ping_needs_cap_net_raw(env: Env, probe_bin: Path) -> None:
    cfg = base_config(["ping", "-c", "1", "-W", "1", "127.0.0.1"])
    code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg))
    assert code != 0 and "permission denied" in err.lower(), (out, err)
    cfg = base_config(["probe", "raw-socket"])
    for k in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][k].append("CAP_NET_RAW")
    code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg, name="raw"))
    assert out.startswith("ok "), (out, err)


def _no_seccomp(args: list[str]) -> dict[str, Any]:
    # Without the profile (which would refuse sethostname itself): this checks that the
    # capability set alone denies what it does not grant.
    cfg = base_config(args)
    del cfg["linux"]["seccomp"]
    return cfg


@pytest.mark.parametrize("args,cap", [
    (["probe", "chown", "/tmp/f", "1000"], "CAP_CHOWN"),
    (["probe", "sethostname", "evil"], "CAP_SYS_ADMIN"),
    (["probe", "mknod-null"], "CAP_MKNOD"),
])
def test_capability_not_granted_is_not_usable(env: Env, probe_bin: Path, args: list[str],
                                              cap: str) -> None:
    if args[1] == "mknod-null":
        args = ["sh", "-c", "mknod /tmp/n c 1 3 && echo ok 0 || echo err 1"]
    else:
        args = ["sh", "-c", "touch /tmp/f; " + " ".join(args)]
    _code, out, err = run(env.rt, env, bundle(env, probe_bin, _no_seccomp(args)))
    assert out.splitlines()[-1] == f"err {EPERM}", (out, err)
    cfg = _no_seccomp(args)
    for k in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][k].append(cap)
    _code, out, err = run(env.rt, env, bundle(env, probe_bin, cfg, name="with"))
    assert out.splitlines()[-1] == "ok 0", (out, err)
