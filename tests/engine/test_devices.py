"""Devices in containers: `--device /dev/X[:/dev/Y][:rwm]` and `--device-cgroup-rule`
(the node and the cgroup rule; a container without them cannot open the device), CDI
specs (`--device vendor.com/class=name`, the cdi.k8s.io annotation form, `cove cdi
list`: a spec made here, in a directory of the test's own, applied exactly; bad specs
rejected naming the field; two specs claiming one device refused), the handlers that
can't take devices, and `cove cdi generate --nvidia` against a fake driver tree the test
makes (no GPU on the CI hosts: the device nodes are ones mknod makes with NVIDIA's major
195, the libraries and nvidia-smi empty files found through a real `ldconfig -r`).

The device the containers open is a node the test makes with mknod in its temp dir,
with the numbers of /dev/fuse (10:229): opening it does nothing, and it is not among
the devices every container may use.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cove.engine import cdi, cdi_nvidia, hostspec
from cove.engine.devflags import parse_device_cgroup_rule
from cove.errors import CoveError
from tests.lib.engine import Cove, engine_pids
from tests.lib.rootless import Rootless, User

NONE = ("run", "--rm", "--network", "none")
FUSE = (10, 229)


def _mknod(path: Path, major: int = FUSE[0], minor: int = FUSE[1], mode: int = 0o666) -> str:
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(path, mode)  # (mknod's mode is under the umask)
    return str(path)


needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"),
                                reason="the fuse module is not loaded: 10:229 would "
                                       "not open even where allowed")


# -- names, rules and spec checks (no containers) --------------------------------------

def test_qualified_names_and_annotations() -> None:
    assert cdi.parse_qualified("vendor.com/class=dev0") == ("vendor.com", "class", "dev0")
    assert cdi.is_qualified("nvidia.com/gpu=all")
    assert not cdi.is_qualified("/dev/null:/dev/x:rw")
    for bad in ("vendor.com=x", "vendor.com/class", "-v.com/c=x", "v.com/1c=x",
                "v.com/c=-x"):
        with pytest.raises(CoveError):
            cdi.parse_qualified(bad)
    got = cdi.names_from_annotations({"cdi.k8s.io/a": "v.com/c=x,v.com/c=y",
                                      "cdi.k8s.io/b": "v.com/c=x", "other": "z"})
    assert got == ["v.com/c=x", "v.com/c=y"]
    with pytest.raises(CoveError, match=r"annotation cdi\.k8s\.io/a"):
        cdi.names_from_annotations({"cdi.k8s.io/a": "not-a-name"})


def test_device_cgroup_rules() -> None:
    assert parse_device_cgroup_rule("c 10:229 rw") == "c 10:229 rw"
    assert hostspec.cgroup_rule("a *:* m") == {"allow": True, "type": "a", "access": "m"}
    assert hostspec.cgroup_rule("b 8:* r") == {"allow": True, "type": "b", "major": 8,
                                               "access": "r"}
    for bad in ("c 1:3", "x 1:3 rwm", "c 1-3 rwm", "c 1:3 rwx", "c a:3 r", "c 1:3 rr"):
        with pytest.raises(CoveError, match="--device-cgroup-rule"):
            parse_device_cgroup_rule(bad)


def _good() -> dict[str, Any]:
    return {"cdiVersion": "0.5.0", "kind": "test.cove.dev/fake",
            "devices": [{"name": "one", "containerEdits": {
                "deviceNodes": [{"path": "/dev/one", "hostPath": "/dev/null"}]}}]}


@pytest.mark.parametrize("edit, where, why", [
    (lambda s: s.update(cdiVersion="0.2.0"), "cdiVersion", "not a version cove reads"),
    (lambda s: s.update(kind="nope"), "kind", "is not vendor.com/class"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].pop("path"),
     "devices[0].containerEdits.deviceNodes[0].path", "required"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(type="x"),
     "devices[0].containerEdits.deviceNodes[0].type", "not one of"),
    (lambda s: s["devices"][0]["containerEdits"].update(env=["NOEQUALS"]),
     "devices[0].containerEdits.env[0]", "not KEY=VALUE"),
    (lambda s: s["devices"][0]["containerEdits"].update(
        hooks=[{"hookName": "atBoot", "path": "/bin/true"}]),
     "devices[0].containerEdits.hooks[0].hookName", "not one of"),
    (lambda s: s["devices"][0]["containerEdits"].update(
        mounts=[{"hostPath": "/a", "containerPath": "rel"}]),
     "devices[0].containerEdits.mounts[0].containerPath", "absolute"),
    (lambda s: s.update(cdiVersion="0.4.0"), "cdiVersion", "needs at least 0.5.0"),
    (lambda s: s["devices"][0].update(name="bad name"), "devices[0].name", "not a valid"),
    (lambda s: s["devices"].append(s["devices"][0]), "devices[1].name", "defined twice"),
    (lambda s: s["devices"][0].update(annotations={"a": "b"}), "cdiVersion",
     "needs at least 0.6.0"),
    (lambda s: s.update(extra=1), "extra", "unknown field"),
])
def test_bad_specs_name_the_field(tmp_path: Path, edit: Any, where: str, why: str) -> None:
    s = _good()
    edit(s)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(s))
    with pytest.raises(CoveError) as e:
        cdi.read_spec(str(p))
    assert e.value.what == f"CDI spec {p}: {where}" and why in e.value.why, str(e.value)


def test_yaml_specs_and_versions(tmp_path: Path) -> None:
    for v in cdi.VERSIONS[2:]:  # hostPath needs 0.5.0
        p = tmp_path / f"s{v}.yaml"
        p.write_text(f"cdiVersion: \"{v}\"\nkind: test.cove.dev/fake\ndevices:\n"
                     "- name: one\n  containerEdits:\n    deviceNodes:\n"
                     "    - {path: /dev/one, hostPath: /dev/null}\n")
        assert cdi.read_spec(str(p)).devices["one"]["deviceNodes"][0]["path"] == "/dev/one"
    p = tmp_path / "broken.yaml"
    p.write_text("cdiVersion: [\n")
    with pytest.raises(CoveError, match="invalid YAML at line"):
        cdi.read_spec(str(p))


def test_two_specs_claiming_one_device(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for d, fn in ((a, "x.json"), (a, "y.json"), (b, "z.json")):
        (d / fn).write_text(json.dumps(_good()))
    reg = cdi.load([str(a)])
    with pytest.raises(CoveError, match=r"two CDI specs claim test\.cove\.dev/fake=one: "):
        reg.resolve("test.cove.dev/fake=one")
    # a later directory overrides an earlier one (as /var/run/cdi does /etc/cdi)
    reg = cdi.load([str(a), str(b)])
    assert reg.resolve("test.cove.dev/fake=one")[0][1].path == str(b / "z.json")


def _spec_dir(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The test's own CDI spec: a device node (mknod here), an env var, a mount and a
    createContainer hook that writes a marker; and a spec-wide env var."""
    d = tmp_path / "cdi"
    d.mkdir()
    node = _mknod(tmp_path / "fakedev")
    data = tmp_path / "cdidata"
    data.mkdir()
    (data / "hello").write_text("from-cdi-mount\n")
    spec = {"cdiVersion": "0.6.0", "kind": "test.cove.dev/fake",
            "annotations": {"made-by": "test_devices"},
            "containerEdits": {"env": ["CDI_SPEC_WIDE=1"]},
            "devices": [{"name": "dev0", "containerEdits": {
                "env": ["CDI_FOO=bar"],
                "deviceNodes": [{"path": "/dev/cdidev", "hostPath": node,
                                 "permissions": "rw"}],
                "mounts": [{"hostPath": str(data), "containerPath": "/cdi-data",
                            "options": ["ro", "rbind"]}],
                "hooks": [{"hookName": "createContainer", "path": "/bin/sh",
                           "args": ["sh", "-c", f"echo hooked > {tmp_path}/marker"]}]}},
                {"name": "dev1", "containerEdits": {"env": ["CDI_ONE=1"]}}]}
    (d / "fake.json").write_text(json.dumps(spec))
    return d, spec


def test_apply_edits_exactly(tmp_path: Path) -> None:
    d, _ = _spec_dir(tmp_path)
    base: dict[str, Any] = {
        "process": {"env": ["PATH=/bin", "CDI_FOO=old"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/cdi-data", "type": "tmpfs", "source": "tmpfs"}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}}
    got = cdi.apply(base, ["test.cove.dev/fake=dev0"], cdi.load([str(d)]))
    assert got == ["test.cove.dev/fake=dev0"]
    assert base["process"]["env"] == ["PATH=/bin", "CDI_SPEC_WIDE=1", "CDI_FOO=bar"]
    assert base["linux"]["devices"] == [{"path": "/dev/cdidev", "type": "c", "major": 10,
                                         "minor": 229, "fileMode": 0o666}]
    assert base["linux"]["resources"]["devices"][-1] == {
        "allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}
    assert base["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/cdi-data", "type": "bind", "source": str(tmp_path / "cdidata"),
         "options": ["ro", "rbind"]}]
    assert base["hooks"] == {"createContainer": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"echo hooked > {tmp_path}/marker"]}]}
    # `=all`: every device of the kind, the spec-wide edits once
    spec2: dict[str, Any] = {"process": {"env": []}, "mounts": [], "linux": {}}
    cdi.apply(spec2, ["test.cove.dev/fake=all"], cdi.load([str(d)]))
    assert spec2["process"]["env"] == ["CDI_SPEC_WIDE=1", "CDI_FOO=bar", "CDI_ONE=1"]


# -- in containers ----------------------------------------------------------------------

@needs_fuse
def test_host_device_node_and_rules(cove: Cove, tmp_path: Path) -> None:
    node = _mknod(tmp_path / "mydev")
    opened = "exec 3<>/dev/mydev && echo opened"
    r = cove(*NONE, "--device", f"{node}:/dev/mydev", "busybox", "sh", "-c",
             f"ls -l /dev/mydev; {opened}")
    assert "10, 229" in r.stdout and "opened" in r.stdout
    # without it: a node made in the container (mknod is allowed) does not open
    mk = "mknod /dev/mydev c 10 229 && "
    r = cove(*NONE, "busybox", "sh", "-c", mk + opened, check=False)
    assert "opened" not in r.stdout and "not permitted" in r.stderr.lower() + r.stdout.lower()
    # with a cgroup rule for it: it does
    r = cove(*NONE, "--device-cgroup-rule", "c 10:229 rw", "busybox", "sh", "-c",
             mk + opened)
    assert "opened" in r.stdout
    # the default devices are untouched by --device
    r = cove(*NONE, "--device", f"{node}:/dev/mydev", "busybox", "sh", "-c",
             "echo x > /dev/null && head -c1 /dev/zero | wc -c && ls /dev")
    assert r.stdout.split()[0] == "1" and {"null", "zero", "full", "random", "urandom",
                                           "tty", "mydev"} <= set(r.stdout.split())


@needs_fuse
def test_host_device_read_only(cove: Cove, tmp_path: Path) -> None:
    node = _mknod(tmp_path / "mydev")
    r = cove("create", "--network", "none", "--name", "ro", "--device",
             f"{node}:/dev/mydev:r", "busybox", "sh", "-c",
             "exec 3</dev/mydev && echo read; exec 4>/dev/mydev && echo wrote")
    cfg = json.loads((Path(cove.root) / "containers" / "ro" / "config.json").read_text())
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "r"} in \
        cfg["linux"]["resources"]["devices"]
    r = cove("start", "-a", "ro", check=False)
    assert "read" in r.stdout and "wrote" not in r.stdout


def test_device_bad_input(cove: Cove, tmp_path: Path) -> None:
    for args, why in ((["--device", "/dev/nonexistent-cove"], "No such file"),
                      (["--device", "/etc/passwd"], "not a device node"),
                      (["--device-cgroup-rule", "c 1:3"], "expected 'TYPE MAJOR:MINOR"),
                      (["--isolation", "vm", "--device", "/dev/null"],
                       "vm handler can't pass host devices"),
                      (["--isolation", "gvisor", "--device", "/dev/null"],
                       "gVisor does not pass host device nodes")):
        r = cove(*NONE, *args, "busybox", "true", check=False)
        assert r.returncode == 125 and why in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert cove("ps", "-a", "-q").stdout.strip() == ""


@needs_fuse
def test_cdi_device_applied_in_a_container(cove: Cove, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = _spec_dir(tmp_path)
    monkeypatch.setenv("COVE_CDI_SPEC_DIRS", str(d))
    r = cove("create", "--network", "none", "--name", "c1", "--device",
             "test.cove.dev/fake=dev0", "busybox", "sh", "-c",
             "echo $CDI_FOO $CDI_SPEC_WIDE; cat /cdi-data/hello; "
             "(echo x > /cdi-data/new) 2>/dev/null || echo ro-mount; "
             "exec 3<>/dev/cdidev && echo opened")
    cfg = json.loads((Path(cove.root) / "containers" / "c1" / "config.json").read_text())
    assert "CDI_FOO=bar" in cfg["process"]["env"]
    assert {"path": "/dev/cdidev", "type": "c", "major": 10, "minor": 229,
            "fileMode": 0o666} in cfg["linux"]["devices"]
    assert cfg["hooks"]["createContainer"][0]["path"] == "/bin/sh"
    assert not (tmp_path / "marker").exists()
    r = cove("start", "-a", "c1")
    assert r.stdout.split() == ["bar", "1", "from-cdi-mount", "ro-mount", "opened"], r.stdout
    assert (tmp_path / "marker").read_text() == "hooked\n"
    cove("rm", "c1")
    # the annotation form (cdi.k8s.io/...), as CRI passes it
    r = cove(*NONE, "--annotation", "cdi.k8s.io/test=test.cove.dev/fake=dev1", "busybox",
             "sh", "-c", "echo $CDI_ONE $CDI_SPEC_WIDE")
    assert r.stdout.split() == ["1", "1"]
    r = cove(*NONE, "--annotation", "cdi.k8s.io/test=test.cove.dev/fake=nope", "busybox",
             "true", check=False)
    assert r.returncode == 125 and "no CDI spec defines it" in r.stderr


def test_cdi_bad_input_and_list(cove: Cove, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    d, spec = _spec_dir(tmp_path)
    monkeypatch.setenv("COVE_CDI_SPEC_DIRS", str(d))
    r = cove("cdi", "list")
    assert r.stdout.split() == ["test.cove.dev/fake=dev0", "test.cove.dev/fake=dev1",
                                "test.cove.dev/fake=all"]
    # a name no spec defines
    r = cove(*NONE, "--device", "test.cove.dev/fake=nope", "busybox", "true", check=False)
    assert r.returncode == 125 and "no CDI spec defines it" in r.stderr, r.stderr
    # two specs claiming the same device
    (d / "again.json").write_text(json.dumps(spec))
    r = cove(*NONE, "--device", "test.cove.dev/fake=dev0", "busybox", "true", check=False)
    assert r.returncode == 125 and "two CDI specs claim test.cove.dev/fake=dev0" in r.stderr
    r = cove("cdi", "list", check=False)
    assert r.returncode == 1 and "claimed by two specs" in r.stderr
    (d / "again.json").unlink()
    # a broken spec: asking for its kind reports the bad field; `cdi list` too
    spec["devices"][0]["containerEdits"]["deviceNodes"][0]["type"] = "z"
    (d / "fake.json").write_text(json.dumps(spec))
    r = cove(*NONE, "--device", "test.cove.dev/fake=dev0", "busybox", "true", check=False)
    assert r.returncode == 125 and \
        "devices[0].containerEdits.deviceNodes[0].type: 'z' is not one of" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cove("cdi", "list", check=False)
    assert r.returncode == 1 and "deviceNodes[0].type" in r.stderr and not r.stdout.strip()
    assert cove("ps", "-a", "-q").stdout.strip() == ""
    spec["devices"][0]["containerEdits"]["deviceNodes"][0]["type"] = "c"
    (d / "fake.json").write_text(json.dumps(spec))
    r = cove(*NONE, "--isolation", "vm", "--device", "test.cove.dev/fake=dev1", "busybox",
             "true", check=False)
    assert r.returncode == 125 and "vm handler can't pass host devices" in r.stderr


# -- the NVIDIA generator, on a fake driver tree ------------------------------------------

def _fake_driver(root: Path, version: str = "550.54.14") -> None:
    """What the NVIDIA driver installs, as files in `root`: the loaded module's version,
    device nodes (NVIDIA's major 195; mknod, nothing behind them), libraries in the
    multiarch directory with their soname links, nvidia-smi, the GSP firmware."""
    (root / "sys/module/nvidia").mkdir(parents=True)
    (root / "sys/module/nvidia/version").write_text(version + "\n")
    (root / "dev/nvidia-caps").mkdir(parents=True)
    for i in (0, 1):
        _mknod(root / f"dev/nvidia{i}", 195, i)
    _mknod(root / "dev/nvidiactl", 195, 255)
    _mknod(root / "dev/nvidia-uvm", 511, 0)
    _mknod(root / "dev/nvidia-caps/nvidia-cap1", 236, 1)
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    src = root / "empty.c"
    src.write_text("int cove_fake_nvidia;\n")
    for name, soname in (("libcuda.so", "libcuda.so.1"),
                         ("libnvidia-ml.so", "libnvidia-ml.so.1"),
                         ("libnvidia-ptxjitcompiler.so", "libnvidia-ptxjitcompiler.so.1"),
                         ("libz-not-nvidia.so", "libz-not-nvidia.so.1")):
        real = lib / f"{name}.{version}"
        subprocess.run(["gcc", "-shared", "-o", str(real), f"-Wl,-soname,{soname}",
                        str(src)], check=True, capture_output=True)
        (lib / soname).symlink_to(real.name)
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True, capture_output=True)
    (root / "usr/bin").mkdir(parents=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.write_text("#!/bin/sh\necho fake nvidia-smi\n")
    smi.chmod(0o755)
    (root / f"lib/firmware/nvidia/{version}").mkdir(parents=True)
    (root / f"lib/firmware/nvidia/{version}/gsp_ga10x.bin").write_bytes(b"\0")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None,
                    reason="mknod and ldconfig -r need root; the fake libraries gcc")
def test_nvidia_generate_on_a_fake_driver_tree(tmp_path: Path, cove: Cove) -> None:
    root = tmp_path / "driver"
    _fake_driver(root)
    assert "libcuda.so.1" in cdi_nvidia.ld_cache(str(root))
    spec = cdi_nvidia.generate(str(root))
    parsed = cdi.parse_spec("generated", spec)
    assert parsed.kind == "nvidia.com/gpu" and sorted(parsed.devices) == ["0", "1", "all"]
    assert parsed.devices["0"]["deviceNodes"] == [
        {"path": "/dev/nvidia0", "hostPath": str(root / "dev/nvidia0")}]
    assert len(parsed.devices["all"]["deviceNodes"]) == 2
    edits = spec["containerEdits"]
    assert [n["path"] for n in edits["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps/nvidia-cap1"]
    ctr = {m["containerPath"]: m["hostPath"] for m in edits["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu"
    assert ctr[f"{lib}/libcuda.so.1"] == str(root / f"{lib.lstrip('/')}/libcuda.so.550.54.14")
    assert f"{lib}/libnvidia-ml.so.550.54.14" in ctr and f"{lib}/libz-not-nvidia.so.1" not in ctr
    assert ctr["/usr/bin/nvidia-smi"] == str(root / "usr/bin/nvidia-smi")
    assert "/lib/firmware/nvidia/550.54.14" in ctr
    assert edits["env"] == [f"LD_LIBRARY_PATH={lib}", "NVIDIA_DRIVER_VERSION=550.54.14"]
    # the CLI writes it (YAML), and `cdi list` reads it back
    out = tmp_path / "cdi" / "nvidia.yaml"
    r = cove("cdi", "generate", "--nvidia", "--driver-root", str(root), "--output", str(out))
    assert "2 GPU(s)" in r.stderr
    r = cove("cdi", "list", "--spec-dir", str(out.parent))
    assert r.stdout.split() == ["nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=all"]
    # no driver: one line
    r = cove("cdi", "generate", "--nvidia", "--driver-root", str(tmp_path / "none"),
             check=False)
    assert r.returncode == 1 and "no NVIDIA driver is loaded here" in r.stderr


# -- --group-add keep-groups (podman's; crun's run.oci.keep_original_groups) --------------


def test_keep_groups_bad_input(cove: Cove) -> None:
    r = cove("run", "--rm", "--network", "none", "--group-add", "keep-groups",
             "--group-add", "10", "busybox", "true", check=False)
    assert r.returncode == 125 and r.stderr.strip() == (
        "cove: --group-add keep-groups: not with other --group-add values (the caller's "
        "groups are kept as is)"), r.stderr
    r = cove("run", "--rm", "--network", "none", "--isolation", "vm", "--group-add",
             "keep-groups", "busybox", "true", check=False)
    assert r.returncode == 125 and "not with --isolation vm" in r.stderr
    assert cove("ps", "-a", "-q").stdout.strip() == ""


def test_keep_groups_as_root(cove: Cove) -> None:
    """As root (podman allows it too): no setgroups(2), so the process has the groups of
    the engine that started it (its monitor, started here by a `cove` with groups 4242
    and 4343) instead of those the image's /etc/group gives its user."""
    cove("supervisor", "stop")
    grouped = Cove(cove.root, prefix=["setpriv", "--groups", "4242,4343", "--"])
    plain = grouped("run", "--rm", "--network", "none", "busybox", "id", "-G").stdout.split()
    kept = grouped("run", "--rm", "--network", "none", "--group-add", "keep-groups",
                   "busybox", "id", "-G").stdout.split()
    mon = engine_pids(cove.root)["monitor"]
    with open(f"/proc/{mon}/status") as f:
        groups = next(ln.split()[1:] for ln in f if ln.startswith("Groups:"))
    assert groups == ["4242", "4343"]
    assert plain == ["0"] and kept == ["0", "4242", "4343"], (plain, kept)


def test_keep_groups_rootless(rl: Rootless, user: User) -> None:
    """What keep-groups is for (podman's troubleshooting, "passed-in devices or files
    can't be accessed in rootless container"): a file only the user's supplementary
    group may read, bound in. Without keep-groups the runtime's setgroups(2) drops the
    group and the read is refused; with it the group (unmapped: nogroup inside) still
    grants the read."""
    import grp
    gname = f"cove-kg-{user.name[-6:]}"
    subprocess.run(["groupadd", gname], check=True, capture_output=True)
    try:
        gid = grp.getgrnam(gname).gr_gid
        subprocess.run(["usermod", "-aG", gname, user.name], check=True, capture_output=True)
        secret = user.home / "secret"
        secret.write_text("group-only\n")
        os.chown(secret, 0, gid)
        secret.chmod(0o040)
        args = ["run", "--rm", "--network", "none", "-v", f"{secret}:/secret:ro"]
        r = rl(*args, "busybox", "cat", "/secret")
        assert r.returncode != 0 and "Permission denied" in r.stderr + r.stdout, r
        out = rl.ok(*args, "--group-add", "keep-groups", "busybox", "sh", "-c",
                    "cat /secret; id -G")
        assert out.splitlines()[0] == "group-only", out
        assert "65534" in out.splitlines()[1].split(), out  # the host group, unmapped
        secret.unlink()
    finally:
        subprocess.run(["groupdel", gname], capture_output=True)
