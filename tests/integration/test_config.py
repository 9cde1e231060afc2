"""config.json features, each checked from inside a real container."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.lib.bundles import base_config
from tests.lib.runtime import Env, console_server, read_until


def run_out(env: Env, cfg: dict[str, Any], name: str = "bundle") -> tuple[int, str, str]:
    b = env.bundle(cfg, name=name)
    p = env.rt("run", "--bundle", str(b.path), env.id())
    return p.returncode, p.stdout, p.stderr


def test_process_env_cwd_user_umask(env: Env) -> None:
    cfg = base_config(["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; umask; echo $HOME"])
    cfg["process"]["env"].append("FOO=bar baz")
    cfg["process"]["cwd"] = "/var/work"  # created if missing, as runc
    cfg["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 0o077}
    code, out, err = run_out(env, cfg)
    assert code == 0, err
    assert out.splitlines() == ["bar baz", "/var/work", "1000", "1001", "1001 5 7", "0077", "/"]


def test_home_from_passwd(env: Env) -> None:
    _code, out, _ = run_out(env, base_config(["sh", "-c", "echo $HOME"]))
    assert out == "/root\n"


def test_hostname_domainname(env: Env) -> None:
    cfg = base_config(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"])
    cfg["hostname"] = "box1"
    cfg["domainname"] = "example.org"
    _code, out, err = run_out(env, cfg)
    assert out.split() == ["box1", "example.org"], err


def test_readonly_root_and_mounts(env: Env) -> None:
    src = env.tmp / "shared"
    src.mkdir()
    (src / "f").write_text("from host\n")
    cfg = base_config(["sh", "-c", "cat /data/f; touch /data/x 2>&1; touch /rw/y && echo rw-ok; "
                                   "touch /etc/z 2>&1; grep ' /scratch ' /proc/mounts"])
    cfg["root"]["readonly"] = True
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": "/rw", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "size=2m", "mode=700"]},
    ]
    _code, out, _err = run_out(env, cfg)
    lines = out.splitlines()
    assert lines[0] == "from host"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "rw-ok"
    assert "Read-only file system" in lines[3]
    assert "nosuid" in lines[4] and "noexec" in lines[4] and "size=2048k" in lines[4]
    assert not (src / "x").exists()


def test_bind_file_and_symlink_target_stays_inside(env: Env) -> None:
    f = env.tmp / "hostfile"
    f.write_text("file bind\n")
    cfg = base_config(["cat", "/etc/bound", "/link/inside"])
    cfg["mounts"] += [
        {"destination": "/etc/bound", "type": "bind", "source": str(f), "options": ["bind"]},
        # /link -> /etc in the image: the mount must land in the rootfs's /etc... of the
        # container, never the host's /etc.
        {"destination": "/link/inside", "type": "bind", "source": str(f), "options": ["bind"]},
    ]
    b = env.bundle(cfg)
    os.symlink("/etc", b.rootfs / "link")
    p = env.rt("run", "--bundle", str(b.path), env.id())
    assert p.stdout == "file bind\nfile bind\n", p.stderr
    assert not Path("/etc/inside").exists()


def test_masked_and_readonly_paths(env: Env) -> None:
    cfg = base_config(["sh", "-c", "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; "
                                   "echo 1 > /proc/sys/kernel/ns_last_pid 2>&1 || echo ro"])
    _code, out, err = run_out(env, cfg)
    lines = out.split()
    assert lines[0] == "0" and lines[1] == "0" and lines[-1] == "ro", (out, err)


def test_rlimits_oom_score_nnp_caps(env: Env) -> None:
    cfg = base_config(["sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; "
                                   "grep -E 'NoNewPrivs|CapEff|CapBnd' /proc/self/status"])
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 600}]
    cfg["process"]["oomScoreAdj"] = 123
    cfg["process"]["noNewPrivileges"] = True
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    _code, out, err = run_out(env, cfg)
    lines = out.split("\n")
    assert lines[:3] == ["512", "600", "123"], err
    st = dict(line.split(":\t") for line in lines[3:] if line)
    assert st["NoNewPrivs"] == "1"
    assert int(st["CapEff"], 16) == (1 << 5) | (1 << 10)
    assert int(st["CapBnd"], 16) == (1 << 5) | (1 << 10)


def test_user_namespace_mappings(env: Env) -> None:
    cfg = base_config(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u"])
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b = env.bundle(cfg)
    os.chown(b.rootfs, 100000, 100000)
    p = env.rt("run", "--bundle", str(b.path), env.id())
    rows = [line.split() for line in p.stdout.splitlines()]
    assert rows[0] == ["0", "100000", "65536"], p.stderr
    assert rows[1] == ["0", "100000", "65536"]
    assert rows[2] == ["0"]


def test_join_namespace_by_path(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    holder = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), holder, check=True)
    pid = env.rt.state(holder)["pid"]
    cfg = base_config(["sh", "-c", "hostname; readlink /proc/self/ns/net"])
    cfg["hostname"] = "holder"
    b2 = env.bundle(cfg, name="b2")
    p = env.rt("exec", holder, "hostname")
    cfg2 = base_config(["sh", "-c", "hostname; readlink /proc/self/ns/net"])
    cfg2["linux"]["namespaces"] = [
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
        {"type": "uts", "path": f"/proc/{pid}/ns/uts"},
        {"type": "network", "path": f"/proc/{pid}/ns/net"},
    ]
    b2 = env.bundle(cfg2, name="b3")
    q = env.rt("run", "--bundle", str(b2.path), env.id())
    assert q.stdout.splitlines()[0] == p.stdout.strip(), q.stderr
    assert q.stdout.splitlines()[1] == os.readlink(f"/proc/{pid}/ns/net")
    env.rt("delete", "--force", holder, check=True)


def test_sysctl(env: Env) -> None:
    cfg = base_config(["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmni"])
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1000"}
    _code, out, err = run_out(env, cfg)
    assert out.split() == ["1", "1000"], err


def test_devices(env: Env) -> None:
    cfg = base_config(["sh", "-c", "ls -l /dev/mynull /dev/null; echo x > /dev/mynull && echo ok"])
    cfg["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o620, "uid": 0, "gid": 0}]
    _code, out, _err = run_out(env, cfg)
    lines = out.splitlines()
    assert lines[0].startswith("crw--w----") and "1,   3" in lines[0], out
    assert lines[1].startswith("crw-rw-rw-")
    assert lines[2] == "ok"


def test_device_cgroup_denies(env: Env) -> None:
    # mknod of a device that the rules don't allow to open: the node can be made (with
    # CAP_MKNOD: without it mknod itself fails, and proves nothing about the cgroup),
    # but opening it is refused by the devices cgroup.
    cfg = base_config(["sh", "-c", "mknod /dev/sda1x b 8 1 && echo made; "
                                   "head -c1 /dev/sda1x; echo rc=$?"])
    for k in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][k].append("CAP_MKNOD")
    _code, out, err = run_out(env, cfg)
    assert "head: /dev/sda1x: Operation not permitted" in err
    assert out.splitlines() == ["made", "rc=1"]


def test_hooks_all_kinds(env: Env) -> None:
    log = env.tmp / "hooks.log"
    script = env.tmp / "hook.sh"
    script.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n")
    script.chmod(0o755)
    cfg = base_config(["true"])
    # startContainer runs inside the container: the path is resolved in its rootfs
    hooks: dict[str, list[dict[str, Any]]] = {
        k: [{"path": str(script), "args": ["hook.sh", k]}]
        for k in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    }
    hooks["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", "echo started > /tmp/sc"]}]
    cfg["hooks"] = hooks
    b = env.bundle(cfg)
    cid = env.id()
    p = env.rt("run", "--bundle", str(b.path), cid)
    assert p.returncode == 0, p.stderr
    lines = log.read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    states = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert all(s["id"] == cid and s["bundle"] == str(b.path) for s in states)
    # the spec's lifecycle (test_differential checks every kind against crun)
    assert [s["status"] for s in states] == ["created", "created", "created", "running",
                                             "stopped"]
    assert states[0]["pid"] > 1 and states[2]["pid"] == 1  # createContainer: the container's view
    assert (b.rootfs / "tmp" / "sc").read_text() == "started\n"


def test_hook_failure_and_timeout_clean_up(env: Env) -> None:
    cfg = base_config(["true"])
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
    code, _out, err = run_out(env, cfg)
    assert code == 1 and "createRuntime hook #0" in err and "exit status 3" in err
    cfg["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]}
    code, _out, err = run_out(env, cfg, name="b2")
    assert code == 1 and "timed out" in err


def test_terminal_console_socket(env: Env) -> None:
    cfg = base_config(["sh", "-c", "tty; stty size; echo done"])
    cfg["process"]["terminal"] = True
    cfg["process"]["consoleSize"] = {"height": 30, "width": 100}
    b = env.bundle(cfg)
    sock = env.tmp / "console.sock"
    got: dict[str, Any] = {}
    t = console_server(sock, got)
    cid = env.id()
    env.rt("create", "--bundle", str(b.path), "--console-socket", str(sock), cid, check=True)
    t.join(5)
    master = got["fd"]
    env.rt("start", cid, check=True)
    data = read_until(master, b"done")
    os.close(master)
    text = data.decode().replace("\r", "")
    assert "/dev/pts/0" in text or "/dev/console" in text, text
    assert "30 100" in text
    env.rt.wait_status(cid, "stopped")
    env.rt("delete", cid, check=True)


def test_exec_tty(env: Env) -> None:
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    sock = env.tmp / "exec.sock"
    got: dict[str, Any] = {}
    t = console_server(sock, got)
    env.rt("exec", "-t", "--detach", "--console-socket", str(sock), cid, "sh", "-c",
           "tty; echo fin", check=True)
    t.join(5)
    data = read_until(got["fd"], b"fin")
    os.close(got["fd"])
    assert b"/dev/pts/" in data
    env.rt("delete", "--force", cid, check=True)


def test_preserve_fds(env: Env) -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    b = env.bundle(base_config(["sh", "-c", "echo through-fd >&3"]))
    cid = env.id()
    # the fd must be number 3 in cove-runtime: dup it there in the child
    import subprocess

    p = subprocess.run(
        [env.rt.binary, "--root", str(env.rt.root), "run", "--preserve-fds", "1", "--bundle",
         str(b.path), cid],
        preexec_fn=lambda: os.dup2(w, 3), close_fds=False, capture_output=True, text=True,
        timeout=30)
    os.close(w)
    assert p.returncode == 0, p.stderr
    assert os.read(r, 100) == b"through-fd\n"
    os.close(r)


def test_no_fd_leaks_into_container(env: Env) -> None:
    _code, out, err = run_out(env, base_config(["ls", "/proc/self/fd"]))
    assert sorted(out.split()) == ["0", "1", "2", "3"], (out, err)  # 3: ls's own dir fd


@pytest.mark.parametrize("ns", ["ipc", "uts", "network", "cgroup", "pid", "mount"])
def test_namespaces_differ_from_host(env: Env, ns: str) -> None:
    name = {"network": "net", "mount": "mnt"}.get(ns, ns)
    _code, out, err = run_out(env, base_config(["readlink", f"/proc/self/ns/{name}"]))
    assert out.strip() and out.strip() != os.readlink(f"/proc/self/ns/{name}"), err


def test_time_namespace_offsets(env: Env) -> None:
    cfg = base_config(["cat", "/proc/uptime"])
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 100, "nanosecs": 0}}
    code, out, err = run_out(env, cfg)
    assert code == 0, err
    assert float(out.split()[0]) > 86400 * 100


def test_seccomp_errno(env: Env) -> None:
    cfg = base_config(["sh", "-c", "mkdir /tmp/d; echo rc=$?; hostname"])
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}],
    }
    _code, out, err = run_out(env, cfg)
    assert "Permission denied" in err and "rc=1" in out, (out, err)


def test_run_foreground_terminal_relay(env: Env) -> None:
    """`run` of a terminal process without --console-socket relays through its own pty."""
    import pty
    import select
    import time

    cfg = base_config(["sh"])
    cfg["process"]["terminal"] = True
    b = env.bundle(cfg)
    cid = env.id()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(env.rt.binary, [env.rt.binary, "--root", str(env.rt.root), "run", "--bundle",
                                 str(b.path), cid])
    env.rt.wait_status(cid, "running")
    os.write(fd, b"tty; echo hi-from-$(hostname); exit 3\n")
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text and "hi-from-cove" in text
