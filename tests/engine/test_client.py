"""docker-py's call shapes on cove's Python API: the keyword translation (no containers),
then real containers (network="none", a state root per test) through `cove.Client`,
and bridge networks with published ports inside a network namespace of the test's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cove.engine import runargs
from cove.errors import CoveError
from tests.lib.engine import Cove
from tests.lib.paths import ROOT
from tests.lib.wait import wait_for


def _t(**kw: Any) -> runargs.Plan:
    return runargs.translate("busybox", kw.pop("command", None), kw, call="containers.run",
                             default_network="bridge", run=True)


# -- the keywords, translated -----------------------------------------------------------

def test_commands_split_like_docker_py() -> None:
    assert _t(command="sh -c 'echo a  b'").options.command == ["sh", "-c", "echo a  b"]
    assert _t(command=["echo", "a b"]).options.command == ["echo", "a b"]
    assert _t(command=("true",)).options.command == ["true"]
    assert _t().options.command == []
    # an entrypoint list: its first word is the engine's entrypoint, the rest leads argv
    o = _t(entrypoint=["sh", "-c"], command=["echo hi"]).options
    assert (o.entrypoint, o.command) == ("sh", ["-c", "echo hi"])
    o = _t(entrypoint="env -i", command="true").options
    assert (o.entrypoint, o.command) == ("env", ["-i", "true"])
    assert _t(entrypoint=[]).options.entrypoint == ""        # cleared, as docker
    for bad in (b"echo", [1, 2], "echo 'unterminated"):
        with pytest.raises(TypeError, match="command"):
            _t(command=bad)


def test_docker_py_shapes_translate() -> None:
    o = _t(environment={"A": "1", "N": 2, "K": None}).options
    assert o.env == ["A=1", "N=2", "K"]
    assert _t(environment=["A=1", "B=x=y"]).options.env == ["A=1", "B=x=y"]
    assert _t(env={"A": "1"}).options.env == ["A=1"]                     # cove's name
    o = _t(volumes={"/srv": {"bind": "/data", "mode": "ro"}, "named": {"bind": "/n"},
                    "/etc": "/hostetc", "/x": {"bind": "/y", "ro": True},
                    "/p": {"bind": "/q", "mode": "rw", "propagation": "rslave"}}).options
    assert o.volumes == ["/srv:/data:ro", "named:/n:rw", "/etc:/hostetc:rw", "/x:/y:ro",
                         "/p:/q:rw,rslave"]
    assert _t(volumes=["/a:/b:ro", "/c"]).options.volumes == ["/a:/b:ro", "/c"]
    o = _t(ports={"80/tcp": 8080, "53/udp": ("127.0.0.1", 5353), 443: None,
                  "81": [9001, "9002"], "82": ("127.0.0.1",), "83/tcp": (8383,),
                  "84": {"HostIp": "", "HostPort": "8484"}}).options
    assert o.publish == ["8080:80/tcp", "127.0.0.1:5353:53/udp", "443/tcp",
                         "9001:81/tcp", "9002:81/tcp", "127.0.0.1::82/tcp", "8383:83/tcp",
                         "8484:84/tcp"]
    assert o.network == "bridge"
    assert _t(mem_limit="512m").options.memory == "512m"
    assert _t(mem_limit="1gb").options.memory == "1g"
    assert _t(mem_limit=64 << 20).options.memory == str(64 << 20)
    assert _t(restart_policy={"Name": "on-failure", "MaximumRetryCount": 3}).options.restart \
        == "on-failure:3"
    assert _t(restart_policy={"Name": "always"}).options.restart == "always"
    assert _t(restart_policy={"Name": ""}).options.restart == "no"
    assert _t(restart="unless-stopped").options.restart == "unless-stopped"   # cove's
    o = _t(name="x", user=1000, working_dir="/tmp", hostname="h", cap_add="NET_ADMIN",
           cap_drop=["ALL"], read_only=True, network_mode="host", pids_limit=-1,
           nano_cpus=500_000_000, stop_signal="SIGINT",
           security_opt=["no-new-privileges:true"],
           log_config={"Type": "json-file", "Config": {"max-size": "1m"}}).options
    assert (o.name, o.user, o.workdir, o.hostname, o.cap_add, o.cap_drop, o.read_only,
            o.network, o.pids_limit, o.cpus, o.stop_signal, o.security_opt, o.log_opts) == (
        "x", "1000", "/tmp", "h", ["NET_ADMIN"], ["ALL"], True, "host", None, 0.5,
        "SIGINT", ["no-new-privileges=true"], ["max-size=1m"])
    assert _t(cpu_quota=50_000, cpu_period=100_000).options.cpus == 0.5
    assert _t(network="app").options.network == "app"
    assert _t(network_disabled=True).options.network == "none"
    o = _t(healthcheck={"test": ["CMD", "cat", "/a b"], "interval": 2_000_000_000,
                        "Retries": 5, "start_period": 500_000_000}).options
    assert (o.health_cmd, o.health_interval, o.health_retries, o.health_start_period,
            o.health_timeout) == ("cat '/a b'", 2.0, 5, 0.5, 30.0)
    assert _t(healthcheck={"Test": ["CMD-SHELL", "true"]}).options.health_cmd == "true"
    assert _t(healthcheck={"test": "true"}).options.health_cmd == "true"
    assert _t(healthcheck={"test": ["NONE"]}).options.health_cmd is None
    p = _t(labels=["a", "b"])
    assert p.labels == {"a": "", "b": ""}
    assert _t(labels={"k": "v"}).labels == {"k": "v"}
    m = _t(mounts=[{"Type": "bind", "Source": "/s", "Target": "/t", "ReadOnly": True},
                   "type=tmpfs,target=/tm"]).options.mounts
    assert m == ["type=bind,source=/s,target=/t,readonly", "type=tmpfs,target=/tm"]
    assert _t(tmpfs={"/scratch": ""}).options.tmpfs == ["/scratch"]
    assert _t(tmpfs=["/a"]).options.tmpfs == ["/a"]
    # harmless docker-py keywords, and unsupported ones asking for nothing
    _t(use_config_proxy=True, version="1.41", privileged=False, dns=None, devices=[],
       init=None, platform=None, tty=False, stdin_open=False)


def test_remove_detach_and_what_run_returns() -> None:
    p = _t(remove=True)
    assert (p.remove, p.options.rm, p.detach) == (True, False, False)  # the API removes
    p = _t(remove=True, detach=True)
    assert (p.remove, p.options.rm) == (False, True)       # docker: auto-removal
    assert _t(rm=True, detach=True).options.rm                          # cove's name
    p = _t(auto_remove=True)
    assert (p.remove, p.options.rm) == (True, False)
    p = _t(stdout=False, stderr=True, stream=True)
    assert (p.stdout, p.stderr, p.stream) == (False, True, True)
    assert _t().options.detach    # the engine always starts it in the background
    auto = runargs.translate("busybox", None, {}, call="cove.run", default_network="auto",
                             run=True)
    assert auto.options.network == "none"
    auto = runargs.translate("busybox", None, {"ports": {80: 8080}}, call="cove.run",
                             default_network="auto", run=True)
    assert auto.options.network == "bridge"


@pytest.mark.parametrize(("kw", "named"), [
    ({"bogus": 1}, "'bogus'"),                           # unknown to docker-py too
    ({"privileged": True}, "privileged"),                # docker-py's; cove has none
    ({"dns": ["1.1.1.1"]}, "dns"),
    ({"extra_hosts": {"a": "1.2.3.4"}}, "extra_hosts"),
    ({"env": ["A=1"], "environment": {"B": "2"}}, "env"),
    ({"mem_limit": "1g", "memory": "1g"}, "memory"),
    ({"network": "a", "network_mode": "b"}, "network"),
    ({"network_mode": "container:x"}, "network_mode"),
    ({"ports": {80: 8080}, "network": "none"}, "ports"),
    ({"ports": {80: 8080}, "network_mode": "host"}, "ports"),
    ({"ports": {"80/sctp": 1}}, "ports"),
    ({"ports": {"80": ("::1", 80)}}, "ports"),
    ({"ports": {"80": 1.5}}, "ports"),
    ({"ports": 8080}, "ports"),
    ({"tty": "yes"}, "tty"),                             # (tty=True: test_client_tty.py)
    ({"stdin_open": 1}, "stdin_open"),
    ({"environment": "A=1 B=2"}, None),                  # a str is one "K=V", not refused
    ({"environment": {"A=B": "1"}}, "environment"),
    ({"volumes": {"/a": {"bind": "/b", "mode": "ro", "ro": True}}}, "volumes"),
    ({"volumes": {"/a": {"dst": "/b"}}}, "volumes"),
    ({"volumes": {"/a": 1}}, "volumes"),
    ({"volumes": 5}, "volumes"),
    ({"mounts": [{"Type": "bind", "Source": "/a", "Target": "/b",
                  "BindOptions": {"Propagation": "rshared"}}]}, "mounts"),
    ({"mounts": [{"Type": "npipe", "Target": "/b"}]}, "mounts"),
    ({"tmpfs": {"/t": "size=10m"}}, "tmpfs"),
    ({"tmpfs": ["/t:size=10m"]}, "tmpfs"),
    ({"restart_policy": {"name": "always"}}, "restart_policy"),
    ({"restart_policy": {"Name": "always", "MaximumRetryCount": 2}}, "restart_policy"),
    ({"restart_policy": {"Name": "always"}, "remove": True}, "restart_policy"),
    ({"restart": "on-failure:2", "auto_remove": True, "detach": True}, "restart_policy"),
    ({"mem_limit": 1.5}, "mem_limit"),
    ({"cpus": 1, "nano_cpus": 10}, "nano_cpus"),
    ({"cpu_period": 100_000}, "cpu_period"),
    ({"labels": {"a": 1}}, "labels"),
    ({"user": ["root"]}, "user"),
    ({"detach": "yes"}, "detach"),
    ({"healthcheck": {"test": ["CMD"]}}, "healthcheck"),
    ({"healthcheck": {"test": "true", "interval": 1.5}}, "healthcheck interval"),
    ({"log_config": {"Type": "syslog"}}, "log_config"),
    ({"isolation": "hyperv"}, "isolation"),
    ({"name": 5}, "name"),
])
def test_refused_with_a_type_error_naming_the_keyword(kw: dict[str, Any],
                                                      named: str | None) -> None:
    if named is None:
        _t(**kw)
        return
    with pytest.raises(TypeError, match=named):
        _t(**kw)


def test_create_takes_no_run_only_keywords() -> None:
    for k in ("remove", "rm", "stdout", "stderr", "stream"):
        with pytest.raises(TypeError, match=f"containers.create\\(\\) got an unexpected "
                                            f"keyword argument '{k}'"):
            runargs.translate("busybox", None, {k: True}, call="containers.create",
                              default_network="bridge", run=False)
    p = runargs.translate("busybox", None, {"auto_remove": True}, call="containers.create",
                          default_network="bridge", run=False)
    assert p.options.rm and not p.remove


def test_from_env_and_client_roots(tmp_path: Path) -> None:
    import cove
    c = cove.from_env(environment={"COVE_ROOT": str(tmp_path / "r")}, timeout=5)
    assert c.root == str(tmp_path / "r")
    assert c.ping() and c.version()["Version"] == cove.__version__
    with pytest.raises(TypeError, match="'base_url'"):
        cove.from_env(base_url="unix://x")
    with cove.Client(root=str(tmp_path / "s")) as c2:
        assert c2.containers.list(all=True) == [] and c2.volumes.list() == []


def test_import_cove_stays_cheap() -> None:
    r = subprocess.run([sys.executable, "-c", "import cove, sys; print(sorted(m for m in "
                        "sys.modules if m.startswith('cove')))"], capture_output=True,
                       text=True, cwd=str(ROOT), check=True)
    assert r.stdout.strip() == "['cove']"


# -- containers -------------------------------------------------------------------------

@pytest.fixture
def client(cove: Cove) -> Any:
    import cove as api
    return api.Client(root=cove.root)


def _names(containers: list[Any]) -> list[str]:
    return [c.name for c in containers]


def test_run_waits_and_returns_output(client: Any) -> None:
    import cove as api
    script = "sh -c 'echo out; echo err >&2'"
    assert client.containers.run("busybox", script, network="none") == b"out\n"
    assert client.containers.run("busybox", script, network="none", stderr=True,
                                 remove=True) == b"out\nerr\n"
    lines = client.containers.run("busybox", ["sh", "-c", "echo 1; echo 2"],
                                  network="none", stream=True, rm=True)
    assert list(lines) == [b"1\n", b"2\n"]
    with pytest.raises(api.ContainerError) as e:
        client.containers.run("busybox", "sh -c 'echo no >&2; exit 3'", network="none",
                              remove=True, name="failing")
    assert (e.value.exit_status, e.value.stderr, e.value.image) == (3, b"no\n", "busybox")
    assert "returned non-zero exit status 3: no" in str(e.value)
    assert isinstance(e.value, CoveError)
    # the first run is kept (no remove), stopped; the others are gone
    [kept] = client.containers.list(all=True)
    assert kept.status == "exited" and kept.exit_code == 0
    assert kept.logs() == b"out\nerr\n" and kept.logs(stderr=False) == b"out\n"
    kept.remove()
    assert client.containers.list(all=True) == []
    with pytest.raises(CoveError):        # not in the store: a pull, which fails
        client.containers.run("127.0.0.1:9/nothing-here:1", "true", network="none")
    assert client.containers.list(all=True) == []


def test_run_options_take_effect(client: Any, tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "f").write_text("from host\n")
    script = ("echo $A $B; cat /ro/f; touch /ro/x 2>/dev/null || echo ro; "
              "echo v > /vol/v; pwd; id -u; hostname")
    out = client.containers.run(
        "busybox", [script], entrypoint=["sh", "-c"], network="none", name="opts",
        environment={"A": "1", "B": "two words"}, user=0, working_dir="/tmp",
        hostname="box", volumes={str(host): {"bind": "/ro", "mode": "ro"},
                                 "data": {"bind": "/vol", "mode": "rw"}},
        mem_limit="64m", labels={"app": "t"}, cap_drop=["NET_RAW"])
    assert out == b"1 two words\nfrom host\nro\n/tmp\n0\nbox\n"
    c = client.containers.get("opts")
    assert c.attrs["HostConfig"]["Memory"] == 64 << 20 and c.labels == {"app": "t"}
    assert c.attrs["HostConfig"]["NetworkMode"] == "none"
    assert client.volumes.get("data").name == "data"
    assert not (host / "x").exists()
    c.remove()
    client.volumes.get("data").remove()


def test_detached_container_methods(client: Any) -> None:
    import cove as api
    c = client.containers.run("busybox", "sh -c 'echo started; exec sleep 30'",
                              detach=True, network="none", name="bg", labels={"k": "v"})
    assert isinstance(c, api.Container) and c.status == "running" and c.health == "unknown"
    assert client.containers.get(c.id[:10]) == c and client.containers.get("bg") == c
    assert _names(client.containers.list()) == ["bg"]
    assert _names(client.containers.list(filters={"name": "^bg$", "status": "running",
                                                  "label": "k=v"})) == ["bg"]
    assert client.containers.list(filters={"label": "k=w"}) == []
    assert client.containers.list(filters={"status": "exited"}) == []
    with pytest.raises(TypeError, match="'colour'"):
        client.containers.list(filters={"colour": "red"})
    wait_for(lambda: c.logs() == b"started\n", what="log")
    assert c.exec_run("sh -c 'echo $X; echo e >&2; exit 4'", environment={"X": "x"}) \
        == (4, b"x\ne\n")
    r = c.exec_run(["sh", "-c", "pwd; echo e >&2"], workdir="/etc", demux=True)
    assert (r.exit_code, r.output) == (0, (b"/etc\n", b"e\n"))
    assert c.exec_run("sh -c 'echo e >&2'", stdout=False).output == b"e\n"
    assert c.exec_run("true", demux=True).output == (None, None)
    s = c.exec_run("sh -c 'echo a; echo b'", stream=True)
    assert s.exit_code is None and b"".join(s.output) == b"a\nb\n"
    assert c.exec_run("touch /tmp/bg", detach=True) == (None, b"")
    wait_for(lambda: c.exec_run("test -e /tmp/bg").exit_code == 0, what="exec -d")
    with pytest.raises(TypeError, match="tty"):
        c.exec_run("sh", tty=True)
    assert "sleep 30" in [p[-1] for p in c.top()["Processes"]]
    st = c.stats(stream=False)
    assert st["memory_stats"]["usage"] > 0 and st["pids_stats"]["current"] >= 1
    assert c.logs(timestamps=True).endswith(b"Z started\n")
    assert c.logs(tail=0) == b"" and c.logs(since=time.time() + 60) == b""
    c.kill(signal="TERM")     # sleep as pid 1 ignores it
    time.sleep(0.2)
    assert c.status == "running"
    c.stop(timeout=0.5)
    assert c.wait() == {"StatusCode": 137} and c.status == "exited"
    assert list(c.logs(stream=True)) == [b"started\n"]   # not running: no follow
    c.start()
    assert c.status == "running"
    c.restart(timeout=0)
    assert c.status == "running"
    with pytest.raises(CoveError, match="is running"):
        c.remove()
    c.remove(force=True)
    assert c.status == "exited"                  # its last record
    with pytest.raises(api.NotFound):
        c.reload()
    with pytest.raises(api.NotFound):
        client.containers.get("bg")


def test_create_start_wait_and_auto_remove(client: Any) -> None:
    c = client.containers.create("busybox", "sh -c 'exit 7'", network="none", name="made")
    assert c.status == "created"
    c.start()
    assert c.wait(timeout=10)["StatusCode"] == 7 and c.exit_code == 7
    c.remove()
    gone = client.containers.run("busybox", "true", network="none", detach=True,
                                 remove=True, name="auto")
    wait_for(lambda: client.containers.list(all=True) == [], what="auto-removal")
    with pytest.raises(Exception, match=r"no such container|removed before"):
        gone.wait()


def test_volumes_images_and_prune(client: Any) -> None:
    import cove as api
    v = client.volumes.create("named", labels={"a": "b"})
    assert isinstance(v, api.Volume) and (v.name, v.id, v.attrs["Labels"]) == (
        "named", "named", {"a": "b"})
    assert client.volumes.create("named") == v                 # as docker: it exists
    anon = client.volumes.create()
    assert len(anon.name) == 64
    assert {x.name for x in client.volumes.list()} == {"named", anon.name}
    assert [x.name for x in client.volumes.list(filters={"label": "a=b"})] == ["named"]
    assert client.volumes.prune() == {"VolumesDeleted": [anon.name], "SpaceReclaimed": 0}
    c = client.containers.create("busybox", "true", network="none",
                                 volumes={"named": {"bind": "/v", "mode": "rw"}})
    with pytest.raises(CoveError, match="in use"):
        v.remove()
    assert client.volumes.list(filters={"dangling": True}) == []
    c.remove()
    assert client.volumes.prune(filters={"all": True})["VolumesDeleted"] == ["named"]
    with pytest.raises(api.NotFound):
        client.volumes.get("named")
    img = client.images.get("busybox")
    assert isinstance(img, api.Image) and img.tags == ["localhost/busybox:latest"]
    assert img.id.startswith("sha256:") and img.short_id == img.id[:19]
    assert client.images.list() == [img] and client.images.list(name="busybox") == [img]
    assert client.images.list(filters={"dangling": True}) == []
    img.tag("localhost/mine", "v1")
    assert "localhost/mine:v1" in client.images.get("localhost/mine:v1").tags
    with pytest.raises(api.ImageNotFound):
        client.images.get("localhost/absent:latest")
    c = client.containers.create("busybox", "true", network="none")
    assert c.image == img
    c.remove()


def test_images_pull_from_a_registry(client: Any, tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (scripts/install-deps.sh)")
    import cove as api
    from cove.image.store import Store
    from cove.image.transfer import push
    from tests.lib.images import RegistryServer
    reg = RegistryServer(tmp_path / "reg").start()
    try:
        ref = f"{reg.host}/api/busybox"
        Store(client.root).tag("busybox", f"{ref}:v1")
        digest = push(Store(client.root), f"{ref}:v1")
        other = api.Client(root=str(tmp_path / "fresh"))
        img = other.images.pull(ref, tag="v1")
        assert img.id == digest and img.tags == [f"{ref}:v1"]
        with pytest.raises(TypeError, match="all_tags"):
            other.images.pull(ref, all_tags=True)
        with pytest.raises(CoveError):
            other.images.pull(f"{reg.host}/api/absent", tag="v1")
    finally:
        reg.stop()


# -- bridge networks and published ports, in a network namespace of the test's ------------

NETWORK_SCRIPT = """
import json, sys, time, urllib.request
import cove
client = cove.Client(root=sys.argv[1])
net = client.networks.create("app", ipam={"Driver": "default",
                                          "Config": [{"Subnet": "10.123.0.0/24"}]})
srv = client.containers.run(
    "busybox", "sh -c 'mkdir /www && echo hello > /www/index.html && httpd -f -p 80 -h /www'",
    detach=True, name="srv", network="app", ports={"80/tcp": None, "81/tcp": 18081})
ports = srv.ports
host = int(ports["80/tcp"][0]["HostPort"])
by_name = client.containers.run("busybox", "wget -qO- http://srv/", network="app",
                                remove=True)
for _ in range(50):
    try:
        got = urllib.request.urlopen(f"http://10.123.0.1:{host}/", timeout=2).read()
        break
    except OSError:
        time.sleep(0.1)
out = {"subnet": net.attrs["Subnet"], "host": host, "fixed": ports["81/tcp"][0]["HostPort"],
       "by_name": by_name.decode(), "published": got.decode(),
       "members": [c.name for c in client.networks.get("app").containers],
       "listed": [n.name for n in client.networks.list(names=["app"])]}
try:
    net.remove()
except cove.APIError as e:
    out["in_use"] = str(e)
srv.remove(force=True)
net.remove()
out["after"] = [n.name for n in client.networks.list()]
print(json.dumps(out))
"""


def test_networks_and_ports_in_a_netns(cove: Cove, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft not installed (scripts/install-deps.sh)")
    ns = str(tmp_path / "testns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "true"], check=True)
    try:
        r = subprocess.run(["nsenter", f"--net={ns}", sys.executable, "-c", NETWORK_SCRIPT,
                            cove.root], capture_output=True, text=True, cwd=str(ROOT),
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.splitlines()[-1])
        assert out["subnet"] == "10.123.0.0/24" and out["fixed"] == "18081"
        assert out["host"] > 0 and out["host"] != 80       # a free port, picked
        assert out["by_name"] == "hello\n" and out["published"] == "hello\n"
        assert out["members"] == ["srv"] and out["listed"] == ["app"]
        assert "in use" in out["in_use"] and out["after"] == []
    finally:
        subprocess.call(["umount", ns])
