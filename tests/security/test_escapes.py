"""Known container escapes, each replayed from inside a container against cove-runtime
(and, where it tells something, against Debian's runc 1.1.5 with the same bundle).
Every attack here only reads or opens: none writes to a host file even if it works."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import base_config
from tests.lib.runtime import Env, Runtime, console_server, read_until
from tests.lib.security import bundle, run, runc

EPERM, EACCES = 1, 13


def _no_dev_tmpfs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Use the image's own /dev (what a hostile image controls) instead of a tmpfs."""
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev"]
    return cfg


# --- CVE-2019-5736: overwrite the runtime's binary through /proc/self/exe -----------

EVIL = "#!/proc/self/exe\nprint('HOST-INTERPRETER-RAN')\nimport time\ntime.sleep(1)\n"


def test_cve_2019_5736_exec_self_exe_interpreter(env: Env, probe_bin: Path) -> None:
    """An entrypoint `#!/proc/self/exe` makes the kernel resolve that link during the
    runtime's execve: for a Python runtime that is the host's interpreter, which would
    then run inside the container, reachable (and later writable) as /proc/N/exe.
    cove execs through a sealed memfd trampoline: the host interpreter never runs."""
    py = os.path.realpath(sys.executable)
    before = hashlib.sha256(Path(py).read_bytes()).hexdigest()
    cfg = base_config(["sleep", "30"])
    b = bundle(env, probe_bin, cfg)
    (b.rootfs / "bin" / "evil").write_text(EVIL)
    (b.rootfs / "bin" / "evil").chmod(0o755)
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    env.rt("start", cid, check=True)
    # The attacker: finds any process whose exe is not the image's, holds its exe,
    # and reopens it for writing once it exits (probe only opens, never writes).
    attacker = ("for i in $(seq 200); do for p in /proc/[0-9]*; do "
                "l=$(readlink $p/exe 2>/dev/null); case \"$l\" in ''|/bin/busybox|/bin/probe) ;;"
                " *) probe exe-overwrite ${p#/proc/}; exit;; esac; done; usleep 10000; done;"
                " echo none-found")
    att = subprocess.Popen([env.rt.binary, "--root", str(env.rt.root), "exec", cid, "sh", "-c",
                            attacker], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        p = env.rt("exec", cid, "/bin/evil")
        out_att, _ = att.communicate(timeout=30)
    finally:
        att.kill()
        att.wait()
        env.rt("delete", "--force", cid)
    assert "HOST-INTERPRETER-RAN" not in p.stdout + p.stderr, (p.stdout, p.stderr)
    assert p.returncode != 0
    # Whatever the attacker found, it could not open a host file for writing.
    assert "ok " not in out_att and py not in out_att, out_att
    assert hashlib.sha256(Path(py).read_bytes()).hexdigest() == before


def test_cve_2019_5736_runc(env: Env, probe_bin: Path) -> None:
    """runc 1.1.5 runs from a sealed memfd copy of itself: `#!/proc/self/exe` re-runs
    that copy (runc's usage error), never the host's file."""
    rc = runc(env)
    cfg = base_config(["/bin/evil"])
    b = bundle(env, probe_bin, cfg)
    (b.rootfs / "bin" / "evil").write_text("#!/proc/self/exe\n")
    (b.rootfs / "bin" / "evil").chmod(0o755)
    code, out, _err = run(rc, env, b)
    assert code != 0 and "HOST-INTERPRETER-RAN" not in out


# --- CVE-2024-21626: a leaked host directory fd as the process's cwd ----------------

@pytest.mark.parametrize("n", range(3, 11))
def test_cve_2024_21626_cwd_proc_self_fd(env: Env, probe_bin: Path, n: int) -> None:
    cfg = base_config(["sh", "-c", "pwd; ls .. | head -3"])
    cfg["process"]["cwd"] = f"/proc/self/fd/{n}"
    b = bundle(env, probe_bin, cfg)
    code, out, err = run(env.rt, env, b)
    # Refused (a magic link is no cwd), or at most a directory inside the container.
    assert code != 0, (out, err)
    assert "process.cwd" in err, err


def test_cve_2024_21626_exec_cwd(env: Env, probe_bin: Path) -> None:
    b = bundle(env, probe_bin, base_config(["sleep", "30"]))
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), cid, check=True)
    try:
        for n in range(3, 11):
            p = env.rt("exec", "--cwd", f"/proc/self/fd/{n}", cid, "pwd")
            assert p.returncode != 0 and "process.cwd" in p.stderr, (n, p.stdout, p.stderr)
    finally:
        env.rt("delete", "--force", cid)


def test_cve_2024_21626_runc(env: Env, probe_bin: Path) -> None:
    """Debian's runc 1.1.5+ds1-1+deb12u1 carries the fix: it refuses too, or lands
    inside the container."""
    rc = runc(env)
    for n in (3, 7, 8):
        cfg = base_config(["pwd"])
        cfg["process"]["cwd"] = f"/proc/self/fd/{n}"
        code, out, err = run(rc, env, bundle(env, probe_bin, cfg, name=f"r{n}"))
        assert code != 0 or not out.startswith("(unreachable)"), (n, out, err)


def test_no_runtime_fd_leaks(env: Env, probe_bin: Path) -> None:
    """Only 0-2 (+ ls's own directory fd) reach the process, from create and exec."""
    cfg = base_config(["sh", "-c", "ls /proc/self/fd; sleep 30"])
    b = bundle(env, probe_bin, cfg)
    cid = env.id()
    out = env.tmp / "out"
    with open(out, "w") as f:
        subprocess.run([env.rt.binary, "--root", str(env.rt.root), "create", "--bundle",
                        str(b.path), cid], stdout=f, stderr=subprocess.STDOUT, check=True)
    try:
        env.rt("start", cid, check=True)
        env.rt.wait_status(cid, "running")
        p = env.rt("exec", cid, "ls", "/proc/self/fd")
        for _ in range(100):
            if out.read_text().strip():
                break
            import time

            time.sleep(0.05)
        assert out.read_text().split() == ["0", "1", "2", "3"], out.read_text()
        assert p.stdout.split() == ["0", "1", "2", "3"], p.stdout
    finally:
        env.rt("delete", "--force", cid)


# --- CVE-2016-9962: ptrace or /proc of an init that still holds host fds ------------

def _created_init_attack(rt: Runtime, env: Env, probe_bin: Path, name: str) -> str:
    b = bundle(env, probe_bin, base_config(["true"]), name=name)
    cid = env.id()
    rt("create", "--bundle", str(b.path), cid, check=True)
    try:
        # init (pid 1) is blocked before execve holding the state dir and exec fifo.
        p = rt("exec", cid, "sh", "-c", "probe ptrace 1; for f in $(ls /proc/1/fd); do "
                                        "readlink /proc/1/fd/$f || echo denied $f; "
                                        "ls /proc/1/fd/$f/ 2>&1; done; "
                                        "readlink /proc/1/cwd || echo no-cwd; "
                                        "probe open-r /proc/1/environ; ls /proc/1/root/ 2>&1")
        return p.stdout
    finally:
        rt("delete", "--force", cid)


def test_cve_2016_9962_init_not_dumpable(env: Env, probe_bin: Path) -> None:
    out = _created_init_attack(env.rt, env, probe_bin, "b")
    lines = out.splitlines()
    assert lines[0] == f"err {EPERM}", out  # ptrace
    # The fd names can be listed, but no fd can be followed or read.
    assert "denied " in out and "/run" not in out and str(env.tmp) not in out, out
    assert "no-cwd" in out and f"err {EACCES}" in out, out
    assert "exec.fifo" not in out and "state.json" not in out, out


def test_cve_2016_9962_runc(env: Env, probe_bin: Path) -> None:
    """Debian's runc 1.1.5 FALLS here: its init, blocked on the exec fifo, is dumpable
    by then; an exec'd process can ptrace it and read /proc/1/fd/N, which names the
    host's exec.fifo in runc's state dir."""
    out = _created_init_attack(runc(env), env, probe_bin, "r")
    print(out)
    if out.splitlines()[0] == "ok 0" or "exec.fifo" in out:
        pytest.xfail("runc 1.1.5: created init is ptrace-able / its host fds readable")


# --- CVE-2019-16884 / CVE-2019-19921 / CVE-2023-27561: mounts over /proc ------------

def _proc_symlink_bundle(env: Env, probe_bin: Path, name: str) -> Any:
    b = bundle(env, probe_bin, base_config(["sh", "-c", "cat /proc/self/attr/current; "
                                                        "ls /fakeproc"]), name=name)
    os.rmdir(b.rootfs / "proc")
    (b.rootfs / "fakeproc" / "self" / "attr").mkdir(parents=True)
    (b.rootfs / "fakeproc" / "self" / "attr" / "exec").write_text("")
    os.symlink("/fakeproc", b.rootfs / "proc")
    return b


def test_cve_2019_16884_proc_is_symlink(env: Env, probe_bin: Path) -> None:
    """The image's /proc is a symlink to a directory it filled: proc must not be
    mounted through it (the runtime's later /proc writes would land in the fake)."""
    code, out, err = run(env.rt, env, _proc_symlink_bundle(env, probe_bin, "b"))
    assert code != 0 and "ordinary directory" in err, (out, err)


def test_cve_2019_16884_runc(env: Env, probe_bin: Path) -> None:
    code, out, err = run(runc(env), env, _proc_symlink_bundle(env, probe_bin, "r"))
    assert code != 0, (out, err)  # runc: "must be mounted on ordinary directory"


def _over_proc_cases(env: Env) -> list[tuple[str, dict[str, Any]]]:
    fake = env.tmp / "fakeproc"
    (fake / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    return [
        ("bind on /proc", {"destination": "/proc", "type": "bind", "source": str(fake),
                           "options": ["rbind"]}),
        ("tmpfs on /proc", {"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}),
        ("bind in /proc/sys", {"destination": "/proc/sys/kernel", "type": "bind",
                               "source": str(fake / "sys" / "kernel"), "options": ["rbind"]}),
        # The image's /evil is a symlink to /proc: the volume lands on /proc/self/attr.
        ("through symlink", {"destination": "/evil/self/attr", "type": "tmpfs",
                             "source": "tmpfs"}),
        ("through symlink 2", {"destination": "/evil", "type": "bind", "source": str(fake),
                               "options": ["rbind"]}),
    ]


@pytest.mark.parametrize("case", range(5))
def test_cve_2019_19921_mounts_over_proc(env: Env, probe_bin: Path, case: int) -> None:
    name, m = _over_proc_cases(env)[case]
    cfg = base_config(["true"])
    cfg["mounts"].append(m)
    b = bundle(env, probe_bin, cfg)
    os.symlink("/proc", b.rootfs / "evil")
    code, out, err = run(env.rt, env, b)
    assert code != 0 and "/proc" in err, (name, out, err)
    assert "sysfs" not in err


@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_cve_2019_19921_runc(env: Env, probe_bin: Path, case: int) -> None:
    """runc refuses these too ("cannot be mounted because it is inside /proc" / "not
    of type proc"). (Case 4, a bind onto /proc through a symlink, is refused by both;
    its runc message differs and adds nothing.)"""
    name, m = _over_proc_cases(env)[case]
    cfg = base_config(["true"])
    cfg["mounts"].append(m)
    b = bundle(env, probe_bin, cfg, name=f"r{case}")
    os.symlink("/proc", b.rootfs / "evil")
    code, out, err = run(runc(env), env, b)
    if case == 3 and code == 0:
        # runc 1.1.5 checks only bind mounts against /proc: a tmpfs through the image's
        # symlink covers /proc/self/attr (where the LSM label is written).
        pytest.xfail("runc 1.1.5 mounts a tmpfs on /proc/self/attr through a symlink")
    assert code != 0, (name, out, err)


def test_proc_writes_refuse_mounts_on_the_way() -> None:
    """CVE-2025-52881: a procfs file bind-mounted over another (a racing shared mount
    in the real attack) must not redirect the runtime's sysctl writes. open_proc
    refuses to cross any mount below /proc; shown here in a private mount namespace
    with /proc/sys/kernel/hostname bound over .../domainname (read-only opens only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from cove.runtime.rootfs import open_proc
    from cove.sys import libc

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_SLAVE | libc.MS_REC)
            fd = open_proc("sys/kernel/domainname", os.O_RDONLY)  # fine before
            os.close(fd)
            libc.mount("/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", None,
                    libc.MS_BIND)
            try:
                open_proc("sys/kernel/domainname", os.O_RDONLY)
                os.write(w, b"opened")
            except OSError as e:
                os.write(w, f"errno {e.errno}".encode())
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    got = os.read(r, 100).decode()
    os.close(r)
    assert got == "errno 18", got  # EXDEV


# --- CVE-2021-30465: a mount destination that is a symlink out of the rootfs --------

@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_cve_2021_30465_destination_symlink_stays_inside(env: Env, probe_bin: Path,
                                                         kind: str) -> None:
    outside = env.tmp / "outside"
    outside.mkdir()
    cfg = base_config(["sh", "-c", f"grep -c ' {outside} tmpfs' /proc/mounts"])
    cfg["mounts"].append({"destination": "/mnt/link", "type": "tmpfs", "source": "tmpfs",
                          "options": ["size=1m"]})
    b = bundle(env, probe_bin, cfg)
    (b.rootfs / "mnt").mkdir(exist_ok=True)
    target = ("/../../../../../../../.." + str(outside) if kind == "absolute"
              else "../" * 20 + str(outside).lstrip("/"))
    os.symlink(target, b.rootfs / "mnt" / "link")
    code, out, err = run(env.rt, env, b)
    assert not os.path.ismount(outside) and not any(outside.iterdir())
    assert code == 0 and out == "1\n", (out, err)
    # The tmpfs went to <rootfs><outside>: the same path, resolved inside the rootfs.
    assert (b.rootfs / str(outside).lstrip("/")).is_dir()
    runc_rt = runc(env)
    b2 = bundle(env, probe_bin, cfg, name="r")
    (b2.rootfs / "mnt").mkdir(exist_ok=True)
    os.symlink(target, b2.rootfs / "mnt" / "link")
    run(runc_rt, env, b2)
    assert not os.path.ismount(outside) and not any(outside.iterdir())


# --- CVE-2025-31133: /dev/null replaced before maskedPaths --------------------------
# The real attack plants /dev/null -> /proc/sys/kernel/core_pattern: a bind of "/dev/null"
# over a masked path then makes the host's core_pattern writable from the container.
# These tests plant /proc/sys/kernel/hostname instead: the same kind of procfs file,
# but namespaced (the container has its own UTS namespace), so a runtime that falls
# changes nothing on the host. (A first version with core_pattern, under runc 1.1.5,
# rewrote this host's core_pattern through the container's stdio reopened on
# "/dev/null": never plant host-global files here.)
PLANT = "/proc/sys/kernel/hostname"


@pytest.mark.parametrize("plant", ["symlink", "file"])
def test_cve_2025_31133_dev_null(env: Env, probe_bin: Path, plant: str) -> None:
    """With the image's /dev, /dev/null is a symlink to a procfs file (or a plain
    file): cove refuses to start rather than bind it over the masked paths."""
    cfg = _no_dev_tmpfs(base_config(["probe", "read", "/proc/timer_list"]))
    b = bundle(env, probe_bin, cfg)
    if plant == "symlink":
        os.symlink(PLANT, b.rootfs / "dev" / "null")
    else:
        (b.rootfs / "dev" / "null").write_text("not null\n")
    code, out, err = run(env.rt, env, b)
    assert code != 0 and "not the null device" in err, (out, err)


def test_cve_2025_31133_runc(env: Env, probe_bin: Path) -> None:
    """Where runc 1.1.5 falls, the masked /proc/timer_list becomes a bind of the planted
    file (the container's hostname here, the host's core_pattern in the real attack)."""
    cfg = _no_dev_tmpfs(base_config(["sh", "-c", "cat /proc/timer_list 2>/dev/console"]))
    cfg["hostname"] = "planted-hostname"
    b = bundle(env, probe_bin, cfg, name="r")
    os.symlink(PLANT, b.rootfs / "dev" / "null")
    code, out, err = run(runc(env), env, b)
    print(f"runc: code {code}, /proc/timer_list reads {out!r}; stderr {err!r}")
    if code == 0 and "planted-hostname" in out:
        pytest.xfail("runc 1.1.5 is vulnerable to CVE-2025-31133 (masked file = planted)")


# --- CVE-2025-52565: /dev/console bind redirected -----------------------------------

def test_cve_2025_52565_dev_console_symlink(env: Env, probe_bin: Path) -> None:
    """The image's /dev/console is a symlink to a procfs file (core_pattern in the real
    attack; the namespaced hostname here, see PLANT): the pty must be bound on
    /dev/console itself, never on what the link names."""
    cfg = _no_dev_tmpfs(base_config([
        "sh", "-c", "stat -c '%F %t' /dev/console; grep -c kernel/hostname /proc/self/mountinfo;"
                    " echo done"]))
    cfg["process"]["terminal"] = True
    b = bundle(env, probe_bin, cfg)
    os.symlink(PLANT, b.rootfs / "dev" / "console")
    os.symlink("pts/ptmx", b.rootfs / "dev" / "ptmx")  # what an image's /dev has
    os.mknod(b.rootfs / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    sock = env.tmp / "console.sock"
    got: dict[str, Any] = {}
    t = console_server(sock, got)
    cid = env.id()
    try:
        env.rt("create", "--bundle", str(b.path), "--console-socket", str(sock), cid,
               check=True)
        t.join(5)
        master = got["fd"]
        env.rt("start", cid, check=True)
        data = read_until(master, b"done")
        os.close(master)
    finally:
        env.rt("delete", "--force", cid)
    lines = data.decode().replace("\r", "").splitlines()
    assert lines[0] == "character special file 88", lines  # major 136 = 0x88: a pty
    assert lines[1] == "0", lines  # nothing mounted on the planted file
