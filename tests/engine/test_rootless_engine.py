"""`cove run` as an ordinary user, as rootless podman: container ids 1.. mapped to the
user's /etc/subuid and /etc/subgid ranges (layers unpacked through the same user
namespace, so their owners are kept), and slirp4netns for the default network
(published ports through its add_hostfwd, the host's loopback out of reach unless
allowed; bridge networks refused).

Each test makes its own user (tests/security/test_rootless.py's `user` fixture: useradd,
its subordinate ranges, removed afterwards with /etc/subuid and /etc/subgid restored)
and its own network namespace, where the user's `cove` runs (`nsenter --net`): slirp4netns
listens and connects only there. Afterwards: no container, no slirp4netns, no engine
process of the user, the namespace deleted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from cove.engine import rootless
from cove.errors import CoveError
from cove.image import userns
from tests.lib.engine import Cove
from tests.lib.rootless import Rootless, User, mounted, slirp_pids
from tests.lib.wait import wait_for

# -- ids ----------------------------------------------------------------------------------


def test_subordinate_ids_are_mapped(rl: Rootless, user: User) -> None:
    out = rl.ok("run", "--name", "ids", "--network", "none", "busybox", "sh", "-c",
                "id; cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/x; "
                "chown 1000:1000 /tmp/x; ls -ln /tmp/x; stat -c '%u %g' /bin/busybox; "
                "ls /sys/class/net")
    lines = out.splitlines()
    assert lines[0] == "uid=0(root) gid=0(root)"
    assert lines[1].split() == ["0", str(user.uid), "1"]
    assert lines[2].split() == ["1", str(user.subuid[0]), str(user.subuid[1])]
    assert lines[3].split() == ["0", str(user.gid), "1"]
    assert lines[4].split() == ["1", str(user.subgid[0]), str(user.subgid[1])]
    assert lines[5].split()[2:4] == ["1000", "1000"]
    assert lines[6] == "0 0"  # the built-in image, made by the user: root's files
    assert lines[7:] == ["lo"]  # --network none: a namespace of its own, only lo
    # On the host, the container's uid 1000 is the user's subordinate id 999 up.
    st = os.lstat(rl.root / "containers" / "ids" / "merged" / "tmp" / "x")
    assert (st.st_uid, st.st_gid) == (user.subuid[0] + 999, user.subgid[0] + 999)
    assert rl.ok("rm", "ids") == "ids\n"  # the subordinate ids' files go too
    assert not (rl.root / "containers" / "ids").exists()

    out = rl.ok("run", "--rm", "--network", "none", "-u", "1000:1000", "busybox", "sh", "-c",
                "id -u; id -g; touch /tmp/y && ls -ln /tmp/y")
    assert out.splitlines()[:2] == ["1000", "1000"]
    assert out.splitlines()[2].split()[2:4] == ["1000", "1000"]


def test_a_user_outside_the_ranges_is_refused(rl: Rootless, user: User) -> None:
    n = user.subuid[1] + 1
    r = rl("run", "--rm", "--network", "none", "-u", str(n), "busybox", "true")
    assert r.returncode == 125  # docker's code for a run that never started
    assert r.stderr == (f"cove: user {n}: uid {n} is not mapped in the rootless user "
                        f"namespace ({n} ids from /etc/subuid)\n")
    assert rl.ok("ps", "-aq") == ""


def _owned_tar(path: Path) -> None:
    """A busybox rootfs with files of other owners: 1000:1000 (0700 / 0600) and
    4242:4343."""
    with tarfile.open(path, "w") as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", uid: int = 0,
                gid: int = 0, mode: int = 0o644, link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.uid, ti.gid, ti.mode, ti.linkname = kind, uid, gid, mode, link
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data else None)
        for d in ("bin", "etc", "home"):
            add(d, tarfile.DIRTYPE, mode=0o755)
        add("tmp", tarfile.DIRTYPE, mode=0o1777)
        with open("/bin/busybox", "rb") as f:
            add("bin/busybox", data=f.read(), mode=0o755)
        for n in ("sh", "ls", "id", "cat", "touch"):
            add(f"bin/{n}", tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        add("etc/group", data=b"root:x:0:\napp:x:1000:\n")
        add("home/app", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o700)
        add("home/app/secret", data=b"s3cret\n", uid=1000, gid=1000, mode=0o600)
        add("srv", data=b"x\n", uid=4242, gid=4343, mode=0o640)


def test_layer_owners_are_kept(rl: Rootless, user: User) -> None:
    tar = user.home / "owned.tar"
    _owned_tar(tar)
    os.chown(tar, user.uid, user.gid)
    rl.ok("import", str(tar), "owned")
    out = rl.ok("run", "--rm", "--network", "none", "owned", "ls", "-lnd", "/bin/busybox",
                "/home/app", "/home/app/secret", "/srv")
    owners = [ln.split()[2:4] for ln in out.splitlines()]
    assert owners == [["0", "0"], ["1000", "1000"], ["1000", "1000"], ["4242", "4343"]]
    out = rl.ok("run", "--rm", "--network", "none", "-u", "app", "owned", "sh", "-c",
                "id; cat /home/app/secret")
    assert out == "uid=1000(app) gid=1000(app)\ns3cret\n"
    snaps = list((rl.root / "snapshots").glob("*/fs/srv"))
    assert len(snaps) == 1
    st = os.lstat(snaps[0])
    assert (st.st_uid, st.st_gid) == (user.subuid[0] + 4241, user.subgid[0] + 4342)
    # The snapshot (directories of subordinate ids, 0700) goes with the image.
    rl.ok("rmi", "owned")
    assert not snaps[0].parent.parent.exists()

    # An owner beyond the ranges: one line, nothing left of the unpack.
    with tarfile.open(tar, "w") as tf:
        ti = tarfile.TarInfo("f")
        ti.uid, ti.size = user.subuid[1] + 1, 1
        tf.addfile(ti, io.BytesIO(b"x"))
    before = sorted(os.listdir(rl.root / "snapshots"))
    r = rl("import", str(tar), "unmapped")
    assert r.returncode == 1
    assert r.stderr.endswith(f": 'f' is owned by {user.subuid[1] + 1}:0, which the rootless "
                             "user namespace does not map (too few ids granted in "
                             "/etc/subuid or /etc/subgid)\n"), r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert sorted(os.listdir(rl.root / "snapshots")) == before


# -- slirp4netns --------------------------------------------------------------------------

GET = ("import socket, sys, time\n"
       "deadline = time.monotonic() + 10\n"
       "while True:\n"
       "    try:\n"
       "        s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5)\n"
       "        s.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\n"
       "        data = b''\n"
       "        while chunk := s.recv(4096):\n"
       "            data += chunk\n"
       "        if data:\n"
       "            print(data.decode().split('\\r\\n\\r\\n', 1)[-1], end='')\n"
       "            break\n"
       "    except OSError as e:\n"
       "        if time.monotonic() > deadline:\n"
       "            print(f'error: {e.strerror}'); break\n"
       "    time.sleep(0.1)\n")


def test_slirp4netns_default_network_and_published_port(rl: Rootless,
                                                        user: User) -> None:
    rl.ok("run", "-d", "--name", "web", "-p", "18080:80", "busybox", "sh", "-c",
          "mkdir /www; echo hello-from-the-container > /www/index.html; "
          "exec httpd -f -p 80 -h /www")
    rec = json.loads(rl.ok("inspect", "web"))[0]
    assert rec["HostConfig"]["NetworkMode"] == "slirp4netns"
    ns = rec["NetworkSettings"]
    assert (ns["IPAddress"], ns["Gateway"]) == ("10.0.2.100", "10.0.2.2")
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}
    assert rl.ok("port", "web").strip() == "80/tcp -> 0.0.0.0:18080"
    # from the user's network namespace's loopback, through slirp4netns's hostfwd
    got = rl.in_netns(sys.executable, "-c", GET, "18080")
    assert got.stdout == "hello-from-the-container\n", got
    out = rl.ok("exec", "web", "sh", "-c", "ip -4 addr show tap0; ip route; "
                                           "cat /etc/resolv.conf")
    assert "inet 10.0.2.100/24" in out
    assert "default via 10.0.2.2 dev tap0" in out
    assert "nameserver 10.0.2.3" in out
    slirps = slirp_pids(user)
    assert len(slirps) == 1
    cdir = rl.root / "containers" / "web"
    assert (cdir / "slirp4netns.pid").read_text().split()[0] == str(slirps[0])

    rl.ok("rm", "-f", "web")
    wait_for(lambda: not slirp_pids(user), 5, "slirp4netns gone", interval=0.05)
    assert not cdir.exists()
    got = rl.in_netns(sys.executable, "-c", GET.replace("+ 10", "+ 0"), "18080")
    assert got.stdout == "error: Connection refused\n"


def test_slirp4netns_per_container_and_after_a_restart(rl: Rootless,
                                                       user: User) -> None:
    for n in ("a", "b"):
        rl.ok("run", "-d", "--name", n, "-p", "80", "busybox", "sleep", "600")
    ports = {json.loads(rl.ok("inspect", n))[0]["NetworkSettings"]["Ports"]["80/tcp"][0]
             ["HostPort"] for n in ("a", "b")}
    assert len(ports) == 2  # a free host port each, as docker's -p CTR
    assert len(slirp_pids(user)) == 2
    rl.ok("stop", "-t", "1", "a")
    wait_for(lambda: len(slirp_pids(user)) == 1, 5, "one slirp4netns", interval=0.05)
    assert not (rl.root / "containers" / "a" / "slirp4netns.pid").exists()
    rl.ok("start", "a")
    assert rl.ok("exec", "a", "cat", "/sys/class/net/tap0/mtu") == "65520\n"
    assert len(slirp_pids(user)) == 2
    rl.ok("rm", "-f", "a", "b")
    wait_for(lambda: not slirp_pids(user), 5, "slirp4netns gone", interval=0.05)


SERVE = ("import socket, sys\n"
         "s = socket.socket()\n"
         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
         "s.listen()\n"
         "print('ready', flush=True)\n"
         "while True:\n"
         "    c, _ = s.accept()\n"
         "    c.sendall(b'hello-from-the-host\\n')\n"
         "    c.close()\n")


def test_host_loopback_is_refused_unless_allowed(rl: Rootless) -> None:
    srv = subprocess.Popen(["nsenter", f"--net=/run/netns/{rl.netns}", sys.executable, "-c",
                            SERVE, "18090"], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline() == "ready\n"
        probe = "nc -w 3 10.0.2.2 18090 </dev/null; echo rc=$?"
        out = rl.ok("run", "--rm", "busybox", "sh", "-c", probe)
        assert "hello-from-the-host" not in out and "rc=1" in out
        out = rl.ok("run", "--rm", "--network", "slirp4netns:allow_host_loopback=true",
                    "busybox", "sh", "-c", probe)
        assert out == "hello-from-the-host\nrc=0\n"
    finally:
        srv.kill()
        srv.wait()


def test_bridge_networks_are_refused(rl: Rootless) -> None:
    why = ("rootless: bridge networks need root; a rootless container's network is "
           "slirp4netns (the default), none or host")
    r = rl("run", "--rm", "--network", "mynet", "busybox", "true")
    assert (r.returncode, r.stderr) == (125, f"cove: network mynet: {why}\n")
    r = rl("network", "create", "mynet")
    assert (r.returncode, r.stderr) == (1, f"cove: network create mynet: {why}\n")
    r = rl("run", "--rm", "--network", "slirp4netns:mtu=9", "busybox", "true")
    assert r.returncode == 125 and r.stderr.startswith(
        "cove: --network slirp4netns:mtu=9: bad option 'mtu=9': ")
    # A record a rootless run once left behind (the bridge named cove0, as root's): `rm`
    # drops the record and never touches the bridge of that name.
    assert rl.in_netns("ip", "link", "add", "cove0", "type", "bridge").returncode == 0
    nets = rl.root / "networks"
    subprocess.run(["runuser", "-u", rl.u.name, "--", "mkdir", "-p", str(nets)], check=True)
    (nets / "bridge.json").write_text(json.dumps({
        "Name": "bridge", "Id": "0" * 64, "Driver": "bridge", "Subnet": "10.88.0.0/24",
        "Gateway": "10.88.0.1", "Bridge": "cove0", "Containers": {}}))
    os.chown(nets / "bridge.json", rl.u.uid, rl.u.gid)
    r = rl("network", "rm", "bridge")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert not (nets / "bridge.json").exists()
    assert rl.in_netns("ip", "link", "show", "cove0").returncode == 0
    r = rl("network", "rm", "bridge")
    assert (r.returncode, r.stderr) == (1, "cove: network bridge: no such network\n")


def test_root_may_use_slirp4netns_too(cove: Cove) -> None:
    """As podman's `--network slirp4netns` for root. slirp4netns runs without its
    sandbox then: pivoting out of a mount namespace root made would unmount the host's
    shared mounts (`ip netns`'s /run/netns/NAME)."""
    if not rootless.binary():
        pytest.skip("needs slirp4netns")
    netns = f"cove-rl-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    try:
        c = Cove(cove.root, ["nsenter", f"--net=/run/netns/{netns}"])
        out = c("run", "--rm", "--network", "slirp4netns", "busybox", "sh", "-c",
                "ip route | head -1; cat /etc/resolv.conf | head -1").stdout
        assert out == "default via 10.0.2.2 dev tap0 \nnameserver 10.0.2.3\n"
        assert mounted(f"/run/netns/{netns}")
        left = [p for p in os.listdir("/proc") if p.isdigit()
                and _cwd(p).startswith(cove.root)]
        assert not left
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


# -- without a user: parsing ---------------------------------------------------------------


def test_id_maps_from_the_subordinate_files(tmp_path: Path, monkeypatch: Any) -> None:
    sub = tmp_path / "subuid"
    sub.write_text("other:100000:65536\n# a comment\nbad line\n"
                   f"{os.geteuid()}:200000:1000\nx:y:z\n{os.geteuid()}:300000:5\n")
    monkeypatch.setattr(userns, "SUBUID", str(sub))
    monkeypatch.setattr(userns, "SUBGID", str(sub))
    if not userns.helper("newuidmap") or not userns.helper("newgidmap"):
        pytest.skip("needs newuidmap/newgidmap")
    umaps, gmaps = userns.id_maps()
    assert umaps == [{"containerID": 0, "hostID": os.geteuid(), "size": 1},
                     {"containerID": 1, "hostID": 200000, "size": 1000},
                     {"containerID": 1001, "hostID": 300000, "size": 5}]
    assert userns.map_size(umaps) == 1006
    assert gmaps[0] == {"containerID": 0, "hostID": os.getegid(), "size": 1}
    monkeypatch.setattr(userns, "SUBGID", str(tmp_path / "missing"))
    umaps, gmaps = userns.id_maps()  # one file grants none: the single mapping
    assert len(umaps) == 1 and len(gmaps) == 1


def test_network_modes() -> None:
    assert rootless.options("slirp4netns") == {"allow_host_loopback": False, "mtu": 65520}
    assert rootless.options("slirp4netns:allow_host_loopback=true,mtu=1500") == {
        "allow_host_loopback": True, "mtu": 1500}
    for bad in ("slirp4netns:mtu=70000", "slirp4netns:allow_host_loopback=yes",
                "slirp4netns:port_handler=rootlesskit"):
        with pytest.raises(CoveError):
            rootless.options(bad)
    if os.geteuid() == 0:
        assert rootless.network_mode("default") == "bridge"
        assert rootless.network_mode("mynet") == "mynet"
    assert rootless.network_mode("none") == "none"
    assert not rootless.is_slirp("slirp") and rootless.is_slirp("slirp4netns:mtu=1500")
