"""Bad input: one clear line (`cove-runtime: <what>: <why>`), a non-zero exit (runc's
code, 1), a message in --log too, and nothing left behind (the `env` fixture checks
mounts, processes, cgroups and state entries after every test)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import base_config
from tests.lib.paths import RUNTIME
from tests.lib.refruntimes import CRUN, CRUN_OCI_VERSION, RUNC, crun, runc
from tests.lib.runtime import Env


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


def _maps(uid: list[tuple[int, int, int]], gid: list[tuple[int, int, int]] | None = None
          ) -> Callable[[dict[str, Any]], None]:
    """A new user namespace with these (containerID, hostID, size) mappings."""
    def edit(c: dict[str, Any]) -> None:
        lin = c["linux"]
        lin["namespaces"].append({"type": "user"})
        lin["uidMappings"] = [{"containerID": a, "hostID": b, "size": n} for a, b, n in uid]
        lin["gidMappings"] = [{"containerID": a, "hostID": b, "size": n}
                              for a, b, n in (gid if gid is not None else [(0, 100000, 65536)])]
    return edit


_OK_MAP = [(0, 100000, 65536)]

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
    "no-mount-ns": (lambda c: c["linux"].__setitem__("namespaces", [
        n for n in c["linux"]["namespaces"] if n["type"] != "mount"]),
        "linux.namespaces: a container needs a mount namespace of its own, not the host's"),
    # Joining the host's mount namespace by path is refused by design (README,
    # cove-runtime): the entry is named, whatever path leads to that namespace.
    "host-mount-ns": (lambda c: c["linux"].__setitem__("namespaces", [
        n if n["type"] != "mount" else {"type": "mount", "path": "/proc/self/ns/mnt"}
        for n in c["linux"]["namespaces"]]),
        "linux.namespaces[4].path: /proc/self/ns/mnt is the host's mount namespace: a "
        "container needs a mount namespace of its own, not the host's"),
    "host-mount-ns-other-path": (lambda c: c["linux"].__setitem__("namespaces", [
        n if n["type"] != "mount" else {"type": "mount", "path": f"/proc/{os.getpid()}/ns/mnt"}
        for n in c["linux"]["namespaces"]]),
        "/ns/mnt is the host's mount namespace: a container needs a mount namespace of its "
        "own, not the host's"),
    # runc and crun refuse kernel.hostname in any case (test_sysctl_hostname_refused);
    # it would silently override (or stand in for) the `hostname` field.
    "sysctl-kernel-hostname": (lambda c: (c.__setitem__("hostname", "box"), c["linux"]
                                          .__setitem__("sysctl", {"kernel.hostname": "x"})),
                               "linux.sysctl.kernel.hostname: conflicts with the `hostname` "
                               "field: set the hostname there"),
    "sysctl-kernel-hostname-alone": (_set("linux.sysctl", {"kernel.hostname": "x"}),
                                     "linux.sysctl.kernel.hostname: conflicts with the "
                                     "`hostname` field"),
    # kernel.domainname is refused only against a different `domainname` (as crun)
    "sysctl-kernel-domainname": (lambda c: (c.__setitem__("domainname", "a.org"), c["linux"]
                                            .__setitem__("sysctl", {"kernel.domainname": "b"})),
                                 "linux.sysctl.kernel.domainname: 'b' conflicts with the "
                                 "`domainname` field ('a.org')"),
    "sysctl-host-ipc-ns": (lambda c: (
        c["linux"].__setitem__("sysctl", {"kernel.shmmni": "4096"}),
        c["linux"].__setitem__("namespaces", [
            n if n["type"] != "ipc" else {"type": "ipc", "path": "/proc/self/ns/ipc"}
            for n in c["linux"]["namespaces"]])),
        "linux.sysctl.kernel.shmmni: not allowed in the host's ipc namespace"),
    "unknown-syscall": (_set("linux.seccomp", {
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["mkdir", "mkdir_typo"], "action": "SCMP_ACT_ERRNO"}]}),
        "linux.seccomp.syscalls[1].names[1]: unknown syscall 'mkdir_typo' (annotation "
        "io.cove.unknown-syscalls=ignore skips such names)"),
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
    # Malformed id mappings: the kernel would answer a bare EINVAL (or map less than
    # asked); each is named by its JSON path before anything is created.
    "map-size-0": (_maps([(0, 100000, 0)]),
                   "linux.uidMappings[0].size: must be at least 1, not 0"),
    "map-size-negative": (_maps(_OK_MAP, [(0, 100000, -5)]),
                          "linux.gidMappings[0].size: must be at least 1, not -5"),
    "map-host-negative": (_maps([(0, -1, 10)]),
                          "linux.uidMappings[0].hostID: must not be negative, not -1"),
    "map-container-negative": (_maps([(-10, 100000, 10)]),
                               "linux.uidMappings[0].containerID: must not be negative"),
    "map-host-overflow": (_maps([(0, 2**32 - 10, 65536)]),
                          "linux.uidMappings[0].hostID: 4294967286 + size 65536 goes past "
                          "the last id, 4294967294"),
    "map-container-overflow": (_maps([(2**32 - 1, 100000, 1)]),
                               "linux.uidMappings[0].containerID: 4294967295 + size 1 goes "
                               "past the last id"),
    "map-huge-id": (_maps([(0, 2**64, 1)]), "linux.uidMappings[0].hostID: 18446744073709551616"),
    "map-not-int": (_maps([(0, 100000, "65536")]),  # type: ignore[list-item]
                    "linux.uidMappings[0].size: expected integer"),
    "map-overlap-container": (_maps([(0, 100000, 1000), (500, 200000, 10)]),
                              "linux.uidMappings[1]: containerID range overlaps that of "
                              "linux.uidMappings[0] (500-509 in both)"),
    "map-overlap-host": (_maps(_OK_MAP, [(0, 100000, 1000), (1000, 100999, 10)]),
                         "linux.gidMappings[1]: hostID range overlaps that of "
                         "linux.gidMappings[0] (100999-100999 in both)"),
    "map-overlap-unsorted": (_maps([(5000, 300000, 10), (0, 100000, 100),
                                    (50, 400000, 10)]),
                             "linux.uidMappings[2]: containerID range overlaps that of "
                             "linux.uidMappings[1]"),
    "map-too-many": (_maps([(i, 100000 + i, 1) for i in range(341)]),
                     "linux.uidMappings: 341 ranges: the kernel takes at most 340"),
    "map-too-long": (_maps([(4 * 10**9 + 2 * i, 3 * 10**9 + 2 * i, 1) for i in range(300)]),
                     "linux.uidMappings: 300 ranges make 7200 bytes in one write; the "
                     "kernel takes fewer than"),
}


def test_340_mappings_are_fine(env: Env) -> None:
    """The kernel's limit itself (340 lines per map) is accepted and works."""
    # Short lines: the map must also fit in one write of less than a page.
    b = env.bundle(_cfg(_maps([(i, 1000 + i, 1) for i in range(340)],
                              [(i, 1000 + i, 1) for i in range(340)])))
    b.config["process"]["args"] = ["sh", "-c", "wc -l < /proc/self/uid_map"]
    b.write()
    cid = env.id()
    p = env.rt("run", "--bundle", str(b.path), cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "340"


def _with_cap_last_cap(env: Env, tmp_path: Path, value: int, tool: str, name: str,
                       bundle: Path) -> subprocess.CompletedProcess[str]:
    """`tool run` with /proc/sys/kernel/cap_last_cap faked by a bind mount in a private
    mount namespace (the host's is untouched)."""
    fake = tmp_path / "cap_last_cap"
    fake.write_text(f"{value}\n")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/sys/kernel/cap_last_cap '
         '&& exec "$@"', str(fake), tool, "--root", str(env.tmp / f"{name}-state"),
         "run", "--bundle", str(bundle), env.id()],
        capture_output=True, text=True, timeout=60)


def test_capability_unknown_to_the_kernel(env: Env, tmp_path: Path) -> None:
    """A capability name Cove knows but the running kernel does not (above
    cap_last_cap; 38 is a kernel before CAP_BPF (39) and CAP_CHECKPOINT_RESTORE (40)):
    one error line naming its JSON path, nothing made. runc 1.1.5 instead warns and runs
    without it; Cove does that only when the config asks (annotation
    io.cove.unknown-caps=ignore). Names nobody knows (CAP_FOO) are errors: CONFIG_CASES."""
    cfg = base_config(["sh", "-c", "grep CapPrm /proc/self/status"])
    caps = cfg["process"]["capabilities"]
    caps["bounding"] += ["CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
    caps["permitted"] += ["CAP_BPF"]
    b = env.bundle(cfg)
    p = _with_cap_last_cap(env, tmp_path, 38, RUNTIME, "cove", b.path)
    assert p.returncode == 1
    assert _one_line(p.stderr) == (
        "cove-runtime: process.capabilities.bounding[3]: CAP_BPF is not known to the "
        "running kernel (cap_last_cap 38; also process.capabilities.bounding[4] "
        "CAP_CHECKPOINT_RESTORE, process.capabilities.permitted[3] CAP_BPF); annotation "
        "io.cove.unknown-caps=ignore leaves such capabilities out instead")
    state = env.tmp / "cove-state"
    assert not state.exists() or not os.listdir(state)

    b.config.setdefault("annotations", {})["io.cove.unknown-caps"] = "ignore"
    b.write()
    p = _with_cap_last_cap(env, tmp_path, 38, RUNTIME, "cove", b.path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == (
        "cove-runtime: warning: ignoring capabilities this kernel does not know "
        "(cap_last_cap 38): process.capabilities.bounding[3] CAP_BPF, "
        "process.capabilities.bounding[4] CAP_CHECKPOINT_RESTORE, "
        "process.capabilities.permitted[3] CAP_BPF")
    prm = int(p.stdout.split()[1], 16)
    assert prm == (1 << 29) | (1 << 5) | (1 << 10)  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    if RUNC:  # runc 1.1.5: a warning, exit 0, CAP_BPF left out
        r = _with_cap_last_cap(env, tmp_path, 38, RUNC, "runc", b.path)
        assert r.returncode == 0 and "ignoring unknown or unavailable capabilities" in r.stderr
        assert int(r.stdout.split()[1], 16) == prm


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


def test_unknown_syscall_ignored_when_asked(env: Env) -> None:
    """With the annotation io.cove.unknown-syscalls=ignore, a name libseccomp does not
    know is skipped (runc's behaviour, for profiles written for newer kernels) and the
    rest of the rule still applies."""
    cfg = base_config(["sh", "-c", "mkdir /tmp/x 2>&1; touch /tmp/y && echo touched"])
    cfg["annotations"] = {"io.cove.unknown-syscalls": "ignore"}
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}
    b = env.bundle(cfg)
    p = env.rt("run", "--bundle", str(b.path), env.id())
    assert p.returncode == 0, p.stderr
    assert "Operation not permitted" in p.stdout and "touched" in p.stdout


def test_sysctl_hostname_refused_as_runc_and_crun(env: Env) -> None:
    """runc 1.1 and crun 1.8 refuse linux.sysctl kernel.hostname, with or without the
    `hostname` field; kernel.domainname agreeing with `domainname` (or alone) is fine."""
    cfg = base_config(["hostname"])
    cfg["ociVersion"] = CRUN_OCI_VERSION
    cfg["hostname"] = "box"
    cfg["linux"]["sysctl"] = {"kernel.hostname": "box"}
    b = env.bundle(cfg)
    refs = ([runc(env)] if RUNC else []) + ([crun(env)] if CRUN else [])
    for rt in [env.rt, *refs]:
        cid = env.id()
        p = rt("run", "--bundle", str(b.path), cid)
        rt("delete", "--force", cid)
        assert p.returncode == 1 and "kernel.hostname" in p.stderr, (rt.binary, p.stderr)
        assert "conflicts with" in p.stderr and "hostname" in p.stderr.split("conflicts")[1]
    cfg["linux"]["sysctl"] = {"kernel.domainname": "ex.org"}
    cfg["domainname"] = "ex.org"
    cfg["process"]["args"] = ["cat", "/proc/sys/kernel/domainname"]
    b2 = env.bundle(cfg, name="b2")
    for rt in [env.rt, *refs]:
        cid = env.id()
        p = rt("run", "--bundle", str(b2.path), cid)
        rt("delete", "--force", cid)
        assert (p.returncode, p.stdout) == (0, "ex.org\n"), (rt.binary, p.stderr)


def test_preserve_fds_not_open(env: Env) -> None:
    """--preserve-fds N hands the caller's fds 3..N+2 on: one the caller did not open is
    named (never a bare "Bad file descriptor", never one of the runtime's own fds
    passed on in its place), and nothing is left behind."""
    b = env.bundle(base_config(["sleep", "100"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    p = env.rt("exec", "--preserve-fds", "2", cid, "true")
    assert p.returncode == 1
    assert _one_line(p.stderr) == ("cove-runtime: --preserve-fds 2: fd 3 is not open "
                                   "(the caller passes fds 3 to 4)")
    r, w = os.pipe()

    def only_fd3() -> None:
        os.dup2(w, 3)
        os.closerange(4, 1024)

    try:  # fd 3 given, fd 4 not: the second one is named
        p = subprocess.run([RUNTIME, "--root", str(env.rt.root), "exec", "--preserve-fds", "2",
                            cid, "true"], preexec_fn=only_fd3, close_fds=False,
                           capture_output=True, text=True, timeout=30)
    finally:
        os.close(r)
        os.close(w)
    assert _one_line(p.stderr) == ("cove-runtime: --preserve-fds 2: fd 4 is not open "
                                   "(the caller passes fds 3 to 4)")
    env.rt("delete", "--force", cid, check=True)
    cid = env.id()
    p = env.rt("create", "--preserve-fds", "1", "--bundle", str(b.path), cid)
    assert p.returncode == 1
    assert _one_line(p.stderr) == ("cove-runtime: --preserve-fds 1: fd 3 is not open "
                                   "(the caller passes fds 3 to 3)")
    assert env.rt("state", cid).returncode == 1
