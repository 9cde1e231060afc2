"""Container operations through the `cove` command (issue 20, point 10): create and
start -a, pause/unpause, rename, update, cp both ways, attach (with `run -d -i`),
export, commit, diff, history and stats. Real containers, `--network none` (the
network test makes its own namespace)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.lib.engine import Cove
from tests.lib.paths import ROOT, RUNTIME
from tests.lib.wait import wait_for

NONE = ("--network", "none")
LOOP = "trap 'echo got TERM; exit 3' TERM; while :; do sleep 0.1; done"


def _inspect(cove: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(cove("inspect", name).stdout)[0]
    return rec


def _popen(cove: Cove, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    return subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", cove.root,
                             *args], env=env, cwd=str(ROOT), **kw)


def _one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode != 0, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cove: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


# -- create, start -a -------------------------------------------------------------------

def test_create_then_start(cove: Cove) -> None:
    cid = cove("create", *NONE, "--name", "c", "busybox", "sh", "-c",
               "echo out; echo err >&2; exit 4").stdout.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    assert _inspect(cove, "c")["State"]["Status"] == "created"
    assert "Created" in cove("ps", "-a").stdout
    r = cove("start", "-a", "c", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    # again: only this run's output (attach follows from where the log is)
    r = cove("start", "-a", "c", check=False)
    assert (r.returncode, r.stdout) == (4, "out\n")
    assert cove("start", "c").stdout == "c\n"
    assert cove("wait", "c").stdout.strip() == "4"
    # -i: a container created with -i keeps its stdin open for start -ai and attach
    cove("create", *NONE, "-i", "--name", "ci", "busybox", "sh", "-c",
         "read a; read b; echo got $a $b")
    assert _inspect(cove, "ci")["Config"]["OpenStdin"] is True
    r = cove("start", "-a", "-i", "ci", input="one\ntwo\n")
    assert r.stdout == "got one two\n"
    _one_line_error(cove("start", "-a", "c", "ci", check=False), "multiple containers")
    # a terminal for a created container: the monitor holds its pty (docker's create -t)
    cove("create", *NONE, "-t", "--name", "ct", "busybox", "sh", "-c", "echo tty; tty")
    assert _inspect(cove, "ct")["Config"]["Tty"] is True
    cove("start", "ct")
    assert cove("wait", "ct").stdout.strip() == "0"
    assert cove("logs", "ct").stdout.splitlines() == ["tty", "/dev/pts/0"]
    cove("rm", "ct")
    _one_line_error(cove("create", "--name", "c", "busybox", check=False), "in use")


# -- pause / unpause --------------------------------------------------------------------

def test_pause_unpause_stop_kill(cove: Cove) -> None:
    cove("run", "-d", *NONE, "--name", "p", "busybox", "sh", "-c",
         "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done")
    assert cove("pause", "p").stdout == "p\n"
    rec = _inspect(cove, "p")
    assert rec["State"]["Status"] == "paused" and rec["State"]["Paused"] is True
    line = next(x for x in cove("ps").stdout.splitlines() if x.endswith(" p"))
    assert " (Paused)" in line and "Up " in line and " second" in line, line
    assert json.loads(cove("ps", "--format", "json").stdout)[0]["State"] == "paused"
    pid = rec["State"]["Pid"]
    with open(f"/proc/{pid}/root/tmp/n") as f:
        n0 = f.read()
    time.sleep(0.4)
    with open(f"/proc/{pid}/root/tmp/n") as f:
        assert f.read() == n0  # frozen: the counter stands still
    _one_line_error(cove("pause", "p", check=False), "already paused")
    _one_line_error(cove("start", "p", check=False), "unpause")
    assert cove("unpause", "p").stdout == "p\n"
    assert _inspect(cove, "p")["State"]["Status"] == "running"
    wait_for(lambda: open(f"/proc/{pid}/root/tmp/n").read() != n0, what="counting again")
    _one_line_error(cove("unpause", "p", check=False), "not paused")
    # kill of a paused container kills it (SIGKILL is delivered once it is thawed)
    cove("pause", "p")
    cove("kill", "p")
    assert cove("wait", "p").stdout.strip() == "137"
    assert _inspect(cove, "p")["State"]["Paused"] is False
    # stop of a paused container: it is thawed and gets its stop signal
    cove("run", "-d", *NONE, "--name", "s", "busybox", "sh", "-c", LOOP)
    cove("pause", "s")
    t0 = time.monotonic()
    cove("stop", "s")
    assert time.monotonic() - t0 < 5
    st = _inspect(cove, "s")["State"]
    assert (st["Status"], st["ExitCode"]) == ("exited", 3)
    assert "got TERM" in cove("logs", "s").stdout
    _one_line_error(cove("pause", "s", check=False), "not running")


# -- rename -----------------------------------------------------------------------------

def test_rename_running_and_stopped(cove: Cove) -> None:
    cove("run", "-d", *NONE, "--name", "ann", "busybox", "sh", "-c",
         f"echo started; {LOOP}")
    cove("create", *NONE, "--name", "taken", "busybox", "true")
    _one_line_error(cove("rename", "ann", "taken", check=False), "already in use")
    _one_line_error(cove("rename", "ann", "bad/name", check=False), "invalid")
    cove("rename", "ann", "bob")
    names = [p["Names"] for p in json.loads(cove("ps", "-a", "--format", "json").stdout)]
    assert sorted(n[0] for n in names) == ["bob", "taken"]
    _one_line_error(cove("logs", "ann", check=False), "no such container")
    assert cove("exec", "bob", "echo", "in b").stdout == "in b\n"
    wait_for(lambda: "started" in cove("logs", "bob").stdout, what="logs under the new name")
    rec = _inspect(cove, "bob")
    assert rec["Name"] == "bob" and rec["State"]["Status"] == "running"
    cove("stop", "bob")
    assert _inspect(cove, "bob")["State"]["ExitCode"] == 3
    cdir = Path(cove.root, "containers")
    wait_for(lambda: not os.path.lexists(cdir / "ann"), what="the old name's link gone")
    assert os.path.isfile(cdir / "bob" / "bob-json.log")
    assert not os.path.lexists(cdir / "bob" / "ann-json.log")
    # stopped: renamed at once; it starts (and logs) under its new name
    cove("rename", "bob", "cal")
    assert sorted(os.listdir(cdir)) == ["cal", "taken"]
    cove("start", "cal")
    wait_for(lambda: cove("logs", "cal").stdout.count("started") == 2, what="second run")
    assert cove("exec", "cal", "true").returncode == 0
    cove("rm", "-f", "cal")


def test_rename_on_a_user_network(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    c("network", "create", "n1")
    c("run", "-d", "--network", "n1", "--name", "x", "busybox", "sleep", "60")
    c("run", "-d", "--network", "n1", "--name", "y", "busybox", "sleep", "60")
    c("rename", "x", "z")
    hosts = c("exec", "y", "cat", "/etc/hosts").stdout
    assert "\tz\n" in hosts and "\tx\n" not in hosts, hosts
    net = json.loads(c("network", "inspect", "n1").stdout)[0]
    assert sorted(net["Containers"]) == ["y", "z"]
    c("stop", "-t", "1", "z")  # its monitor, started as x, detaches it as z
    net = json.loads(c("network", "inspect", "n1").stdout)[0]
    assert sorted(net["Containers"]) == ["y"]
    assert "\tz\n" not in c("exec", "y", "cat", "/etc/hosts").stdout
    c("start", "z")
    assert "\tz\n" in c("exec", "y", "cat", "/etc/hosts").stdout
    c("rm", "-f", "z", "y")
    c("network", "rm", "n1")


# -- update -----------------------------------------------------------------------------

def _cgroup(cove: Cove, name: str, path: str) -> str:
    return cove("exec", name, "cat", f"/sys/fs/cgroup/{path}").stdout.strip()


def test_update_live_and_after_restart(cove: Cove) -> None:
    cove("run", "-d", *NONE, "--name", "u", "-m", "64m", "busybox", "sleep", "600")
    assert cove("update", "-m", "96m", "--pids-limit", "30", "--cpus", "0.5",
                "--cpu-shares", "512", "--restart", "on-failure:3", "u").stdout == "u\n"
    live = {k: _cgroup(cove, "u", p) for k, p in (
        ("mem", "memory/memory.limit_in_bytes"), ("pids", "pids/pids.max"),
        ("quota", "cpu/cpu.cfs_quota_us"), ("shares", "cpu/cpu.shares"))}
    assert live == {"mem": str(96 << 20), "pids": "30", "quota": "50000", "shares": "512"}
    hc = _inspect(cove, "u")["HostConfig"]
    assert (hc["Memory"], hc["PidsLimit"], hc["NanoCpus"], hc["CpuShares"]) == \
        (96 << 20, 30, 500_000_000, 512)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    cove("restart", "-t", "1", "u")
    assert _cgroup(cove, "u", "memory/memory.limit_in_bytes") == str(96 << 20)
    assert _cgroup(cove, "u", "pids/pids.max") == "30"
    cove("update", "--pids-limit", "-1", "u")
    assert _cgroup(cove, "u", "pids/pids.max") == "max"
    _one_line_error(cove("update", "u", check=False), "one or more flags")
    _one_line_error(cove("update", "-m", "1k", "u", check=False), "6MB")
    _one_line_error(cove("update", "--cpus", "99", "u", check=False), "range of CPUs")
    cove("run", "-d", *NONE, "--rm", "--name", "r", "busybox", "sleep", "60")
    _one_line_error(cove("update", "--restart", "always", "r", check=False), "AutoRemove")
    # a stopped container: the record and the bundle, used at its next start
    cove("stop", "-t", "1", "u")
    cove("update", "-m", "80m", "u")
    cove("start", "u")
    assert _cgroup(cove, "u", "memory/memory.limit_in_bytes") == str(80 << 20)


# -- cp ---------------------------------------------------------------------------------

def _tree(tmp: Path) -> Path:
    src = tmp / "src"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "f").write_text("file\n")
    (src / "d" / "sub" / "s").write_text("deep\n")
    (src / "d" / "x").write_text("x\n")
    os.symlink("sub/s", src / "d" / "ln")
    os.chmod(src / "d", 0o751)
    os.chown(src / "f", 1234, 99)
    return src


def test_cp_both_ways(cove: Cove, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    cove("run", "-d", *NONE, "--name", "k", "busybox", "sleep", "600")

    def sh(cmd: str) -> str:
        return cove("exec", "k", "sh", "-c", cmd).stdout
    # host -> container: a file into a directory, as a new name, with -a owners
    cove("cp", str(src / "f"), "k:/tmp/")
    cove("cp", str(src / "f"), "k:/tmp/g")
    cove("cp", "-a", str(src / "f"), "k:/tmp/h")
    assert sh("cat /tmp/f /tmp/g; stat -c '%u:%g %a' /tmp/f /tmp/h") == \
        "file\nfile\n0:0 644\n1234:99 644\n"
    # a directory: as DEST when missing, into DEST when it exists, contents with /.
    cove("cp", str(src / "d"), "k:/tmp/nd")
    assert sh("cd /tmp/nd && ls -A && cat sub/s && readlink ln && stat -c %a .") == \
        "ln\nsub\nx\ndeep\nsub/s\n751\n"
    cove("cp", str(src / "d"), "k:/tmp/nd")
    assert sh("ls /tmp/nd/d") == "ln\nsub\nx\n"
    sh("mkdir /tmp/cd")
    cove("cp", str(src / "d") + "/.", "k:/tmp/cd")
    assert sh("ls /tmp/cd") == "ln\nsub\nx\n"
    _one_line_error(cove("cp", str(src / "d"), "k:/tmp/g", check=False),
                    "directory to a file")
    _one_line_error(cove("cp", str(src / "f"), "k:/tmp/nope/", check=False), "not exist")
    _one_line_error(cove("cp", str(src / "f"), "k:/nope/x", check=False), "not exist")
    _one_line_error(cove("cp", str(tmp_path / "nope"), "k:/tmp", check=False),
                    "no such file")
    # container -> host
    out = tmp_path / "out"
    out.mkdir()
    cove("cp", "k:/tmp/nd", str(out / "nd"))
    assert (out / "nd" / "sub" / "s").read_text() == "deep\n"
    assert os.readlink(out / "nd" / "ln") == "sub/s"
    cove("cp", "k:/tmp/h", str(out))
    assert (out / "h").read_text() == "file\n" and os.stat(out / "h").st_uid == 0
    cove("cp", "-a", "k:/tmp/h", str(out / "h2"))
    assert os.stat(out / "h2").st_uid == 1234
    cove("cp", "k:/tmp/nd/.", str(out))
    assert (out / "x").read_text() == "x\n"
    _one_line_error(cove("cp", "k:/nope", str(out), check=False), "could not find")
    # -L follows a symlink SRC names; without, the link itself
    cove("cp", "k:/tmp/nd/ln", str(out / "l1"))
    cove("cp", "-L", "k:/tmp/nd/ln", str(out / "l2"))
    assert os.path.islink(out / "l1") and (out / "l2").read_text() == "deep\n"
    # `-` is a tar: out on stdout, in from stdin (into a directory)
    raw = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "cp",
                          "k:/tmp/nd", "-"], capture_output=True, cwd=str(ROOT),
                         env={**os.environ, "COVE_RUNTIME": RUNTIME}).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert {"nd", "nd/sub/s", "nd/ln", "nd/x"} <= set(tf.getnames())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("fromtar/hello")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"hi\n"))
    p = _popen(cove, "cp", "-", "k:/tmp", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = p.communicate(buf.getvalue(), timeout=30)
    assert p.returncode == 0, err
    assert sh("cat /tmp/fromtar/hello") == "hi\n"
    _one_line_error(cove("cp", "-", "k:/tmp/g", check=False, input=""), "directory")
    _one_line_error(cove("cp", "a", "b", check=False), "at least one container")
    _one_line_error(cove("cp", "k:/a", "k:/b", check=False), "between containers")


def test_cp_stays_in_the_container(cove: Cove, tmp_path: Path) -> None:
    """Symlinks in the container (absolute, climbing, through /proc) resolve inside it:
    nothing on the host is read or written."""
    (tmp_path / "f").write_text("mine\n")
    cove("run", "-d", *NONE, "--name", "k", "busybox", "sh", "-c",
         "ln -s /etc /tmp/abs; ln -s ../../../../../../etc /tmp/up; sleep 600")
    wait_for(lambda: cove("exec", "k", "test", "-L", "/tmp/up", check=False).returncode == 0)
    marker = f"cove-cp-test-{os.getpid()}"
    for link in ("abs", "up"):
        cove("cp", str(tmp_path / "f"), f"k:/tmp/{link}/{marker}")
        assert not os.path.exists(f"/etc/{marker}")
        assert cove("exec", "k", "cat", f"/etc/{marker}").stdout == "mine\n"
        cove("exec", "k", "rm", f"/etc/{marker}")
    cove("exec", "k", "sh", "-c", "echo container > /etc/hostname")
    cove("cp", "k:/tmp/up/hostname", str(tmp_path / "h"))
    assert (tmp_path / "h").read_text() == "container\n"
    cove("cp", "-L", "k:/tmp/abs", str(tmp_path / "etc"))
    assert (tmp_path / "etc" / "hostname").read_text() == "container\n"
    # a hostile tar on stdin: `..` is refused, a link it plants is not followed
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../../../" + marker)
        tf.addfile(ti, io.BytesIO(b""))
    p = _popen(cove, "cp", "-", "k:/tmp", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = p.communicate(buf.getvalue(), timeout=30)
    assert p.returncode == 1 and b"'..'" in err, err
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("esc")
        ti.type, ti.linkname = tarfile.SYMTYPE, "/"
        tf.addfile(ti)
        ti = tarfile.TarInfo(f"esc/tmp/{marker}")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"x\n"))
    p = _popen(cove, "cp", "-", "k:/tmp", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    p.communicate(buf.getvalue(), timeout=30)
    assert not os.path.exists(f"/tmp/{marker}")
    # resolved inside the destination (as docker scopes it): / is the destination
    assert cove("exec", "k", "cat", f"/tmp/tmp/{marker}").stdout == "x\n"


def test_cp_read_only(cove: Cove, tmp_path: Path) -> None:
    """--read-only refuses a copy into the rootfs, not into a writable volume."""
    (tmp_path / "f").write_text("v\n")
    cove("run", "-d", *NONE, "--read-only", "-v", "vol:/data", "--name", "k", "busybox",
         "sleep", "600")
    cove("cp", str(tmp_path / "f"), "k:/data/")
    assert cove("exec", "k", "cat", "/data/f").stdout == "v\n"
    _one_line_error(cove("cp", str(tmp_path / "f"), "k:/tmp/", check=False), "read-only")
    cove("rm", "-f", "k")
    cove("volume", "rm", "vol")


def test_cp_stopped_container(cove: Cove, tmp_path: Path) -> None:
    """Its rootfs is not mounted: the copy mounts it privately, and the mount goes
    with the copying process."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("before start\n")
    cove("create", *NONE, "--name", "k", "busybox", "cat", "/data/f")
    cove("cp", str(tmp_path / "d"), "k:/data")
    assert cove("start", "-a", "k").stdout == "before start\n"
    cove("cp", "k:/data/f", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "before start\n"
    cove("cp", str(tmp_path / "d" / "f"), "k:/data/g")
    assert cove("diff", "k").stdout.splitlines() == ["A /data", "A /data/f", "A /data/g"]
    with open("/proc/self/mountinfo") as f:
        assert cove.root not in f.read()


# -- attach -----------------------------------------------------------------------------

def test_attach_stdin_detach_and_signals(cove: Cove) -> None:
    cove("run", "-d", "-i", *NONE, "--name", "a", "busybox", "sh", "-c",
         "trap 'echo got TERM; exit 3' TERM; "
         "while :; do if read l; then echo got $l; fi; done")
    assert _inspect(cove, "a")["Config"]["OpenStdin"] is True
    p = _popen(cove, "attach", "a", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
               stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    time.sleep(0.3)
    p.stdin.write(b"hello\n")
    p.stdin.flush()
    assert p.stdout.readline() == b"got hello\n"
    p.stdin.write(b"more\x10\x11ignored\n")  # Ctrl-P Ctrl-Q: detach
    p.stdin.flush()
    assert p.wait(10) == 0
    assert p.stdout.read() == b""  # `more` has no newline yet: read waits for it
    assert _inspect(cove, "a")["State"]["Status"] == "running"
    # stdin stays open across attaches (no EOF on detach); other detach keys
    p = _popen(cove, "attach", "--detach-keys", "ctrl-x,x", "a", stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    time.sleep(0.3)
    p.stdin.write(b"again\n")
    p.stdin.flush()
    assert p.stdout.readline() == b"got moreagain\n"  # `more` was sent before the keys
    p.stdin.write(b"\x18x")
    p.stdin.flush()
    assert p.wait(10) == 0
    # --no-stdin: output only; a signal goes to the container (sig-proxy), which exits
    p = _popen(cove, "attach", "--no-stdin", "a", stdout=subprocess.PIPE,
               stderr=subprocess.PIPE)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    assert (p.returncode, out) == (3, b"got TERM\n"), err
    r = cove("attach", "a", check=False)
    _one_line_error(r, "stopped container")
    _one_line_error(cove("attach", "--detach-keys", "ctrl-1", "a", check=False),
                    "detach key")


def test_attach_from_a_terminal(cove: Cove) -> None:
    """From a terminal (line mode, as docker's without -t): a line goes when typed
    with Enter, Ctrl-P Ctrl-Q detaches at once (no Enter: flow control is off and the
    last key ends a line), and the terminal's settings come back."""
    from tests.lib.engine import cove_terminal
    cove("run", "-d", "-i", *NONE, "--name", "a", "busybox", "sh", "-c",
         "while :; do if read l; then echo got $l; fi; done")
    t = cove_terminal([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "attach",
                       "a"])
    time.sleep(0.5)
    t.send(b"hi there\r")
    t.expect(b"got hi there")
    t.send(b"\x10\x11")
    assert t.wait() == 0
    assert _inspect(cove, "a")["State"]["Status"] == "running"


def test_attach_follows_output(cove: Cove) -> None:
    cove("run", "-d", *NONE, "--name", "t", "busybox", "sh", "-c",
         "echo before; sleep 1; i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo n$i; "
         "echo e$i >&2; sleep 0.1; done; exit 7")
    wait_for(lambda: "before" in cove("logs", "t").stdout, what="first line")
    r = cove("attach", "t", check=False, input="")
    assert r.returncode == 7
    assert "before" not in r.stdout  # from where the log was when it joined
    assert r.stdout == "".join(f"n{i}\n" for i in range(1, 6))
    assert r.stderr == "".join(f"e{i}\n" for i in range(1, 6))


# -- export, diff, commit, history ------------------------------------------------------

def test_diff_commit_export_history(cove: Cove, tmp_path: Path) -> None:
    cove("run", *NONE, "--name", "w", "-e", "X=1", "busybox", "sh", "-c",
         "rm /bin/ls; echo new > /etc/motd2; echo more >> /etc/passwd; "
         "mkdir -p /opt/a && echo f > /opt/a/f; rm -rf /opt/a; mkdir /opt/a; "
         "echo g > /opt/a/g")
    changes = cove("diff", "w").stdout.splitlines()
    assert {"C /bin", "D /bin/ls", "C /etc", "A /etc/motd2", "C /etc/passwd", "A /opt",
            "A /opt/a", "A /opt/a/g"} == set(changes), changes
    assert changes == sorted(changes, key=lambda x: x[2:])
    # export: the container's filesystem, its changes in it
    out = tmp_path / "w.tar"
    cove("export", "-o", str(out), "w")
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        assert "etc/motd2" in names and "bin/ls" not in names and "bin/sh" in names
        f = tf.extractfile("etc/motd2")
        assert f is not None and f.read() == b"new\n"
    raw = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", cove.root,
                          "export", "w"], capture_output=True, cwd=str(ROOT),
                         env={**os.environ, "COVE_RUNTIME": RUNTIME}).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert set(tf.getnames()) == names
    # commit: a new image with the changes (a whiteout for /bin/ls) and the config
    iid = cove("commit", "-m", "the message", "-a", "Me <me@example.com>",
               "-c", "ENV Y=2", "-c", 'CMD ["sh", "-c", "echo $X$Y; ls /bin/ls || echo gone"]',
               "w", "mine:v1").stdout.strip()
    assert iid.startswith("sha256:") and len(iid) == 71
    imgs = cove("images").stdout
    assert "mine" in imgs and iid[7:19] in imgs
    r = cove("run", "--rm", *NONE, "mine:v1")
    assert r.stdout.splitlines()[0] == "12" and r.stdout.splitlines()[-1] == "gone"
    assert cove("run", "--rm", *NONE, "mine:v1", "cat", "/etc/motd2", "/opt/a/g").stdout \
        == "new\ng\n"
    # a running container, committed without a name: paused meanwhile (docker's default)
    cove("run", "-d", *NONE, "--name", "live", "busybox", "sh", "-c",
         "echo x > /x; sleep 600")
    wait_for(lambda: cove("exec", "live", "test", "-f", "/x", check=False).returncode == 0)
    iid2 = cove("commit", "live").stdout.strip()
    assert _inspect(cove, "live")["State"]["Status"] == "running"
    assert any(x.startswith("<none>") and iid2[7:19] in x
               for x in cove("images").stdout.splitlines())
    # history: newest first, docker's columns
    h = cove("history", "mine:v1").stdout.splitlines()
    assert h[0].split()[:2] == ["IMAGE", "CREATED"] and "CREATED BY" in h[0]
    assert h[1].startswith(iid[7:19]) and "the message" in h[1]
    assert all(x.startswith("<missing>") for x in h[2:])
    assert cove("history", "-q", "mine:v1").stdout.splitlines()[0] == iid[7:19]
    _one_line_error(cove("commit", "-c", "RUN true", "w", check=False), "RUN")
    _one_line_error(cove("diff", "nope", check=False), "no such container")


# -- stats ------------------------------------------------------------------------------

def test_stats(cove: Cove) -> None:
    cove("run", "-d", *NONE, "--name", "s1", "busybox", "sh", "-c",
         "while :; do :; done")  # busy: some CPU
    cove("run", "-d", *NONE, "--name", "s2", "-m", "64m", "busybox", "sleep", "600")
    cove("create", *NONE, "--name", "s3", "busybox", "true")
    out = cove("stats", "--no-stream").stdout.splitlines()
    assert out[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/",
                              "LIMIT", "MEM", "%", "NET", "I/O", "BLOCK", "I/O", "PIDS"]
    rows = {x.split()[1]: x.split() for x in out[1:]}
    assert set(rows) == {"s1", "s2"}
    assert float(rows["s1"][2].rstrip("%")) > 10  # a busy loop, sampled a second apart
    assert rows["s2"][5] == "64MiB" and rows["s2"][3].endswith(("KiB", "MiB", "B"))
    mem_total = next(int(x.split()[1]) for x in open("/proc/meminfo")
                     if x.startswith("MemTotal:")) * 1024
    js = [json.loads(x) for x in cove("stats", "--no-stream", "--format", "json",
                                      "s1").stdout.splitlines()]
    assert js[0]["Name"] == "s1" and js[0]["PIDs"] == "1"
    limit = js[0]["MemUsage"].split(" / ")[1]
    assert limit.endswith("GiB") and abs(float(limit[:-3]) * 2**30 - mem_total) < 2**28
    assert set(js[0]) == {"BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage",
                          "Name", "NetIO", "PIDs"}
    t = cove("stats", "--no-stream", "--all", "--format",
             "table {{.Name}}\\t{{.PIDs}}").stdout.splitlines()
    assert t[0].split() == ["NAME", "PIDS"] and sorted(x.split()[0] for x in t[1:]) == \
        ["s1", "s2", "s3"]
    assert cove("stats", "--no-stream", "--format", "{{.Name}}:{{.MemPerc}}",
                "s3").stdout == "s3:0.00%\n"
    _one_line_error(cove("stats", "--no-stream", "nope", check=False), "no such container")
    # streaming: a frame a second (the screen cleared) until interrupted
    p = _popen(cove, "stats", "s2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3.5)
    p.send_signal(signal.SIGINT)
    out_b, _ = p.communicate(timeout=10)
    frames = out_b.decode().split("\033[2J\033[H")
    assert len([f for f in frames if "s2" in f]) >= 2, frames
