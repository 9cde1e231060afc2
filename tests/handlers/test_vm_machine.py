"""Which qemu machine a VM gets: microvm where it boots, q35 otherwise.

The selection logic runs against a fake qemu (a shell script that lists machines and
"boots" only those it is told to, printing the smoke mark), so every branch is covered
in a fraction of a second; one real q35 boot checks the other machine end to end.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.handlers.vm import accel, machine, qemu
from tests.lib.bundles import base_config
from tests.lib.handlers import VM_RUNTIME, no_qemu_left, runtime
from tests.lib.runtime import Env

FAKE = """#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *"-M help"*) printf 'Supported machines are:\\n'
               for m in {listed}; do printf '%-20s %s\\n' "$m" "a machine"; done;;
  *"-M microvm"*) [ {microvm_boots} = 1 ] && echo {mark};;
  *"-M q35"*) [ {q35_boots} = 1 ] && echo {mark};;
esac
exit 0
"""


def fake_qemu(tmp: Path, listed: str = "microvm q35 pc", microvm_boots: bool = True,
              q35_boots: bool = True) -> tuple[str, Path]:
    log = tmp / "qemu.log"
    path = tmp / "qemu-system-x86_64"
    path.write_text(FAKE.format(log=log, listed=listed, microvm_boots=int(microvm_boots),
                                q35_boots=int(q35_boots), mark=accel.MARK))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path), log


def boots(log: Path) -> list[str]:
    """The machines the fake qemu was asked to boot, in order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        if "-kernel" in line:
            out.append(line.split("-M ", 1)[1].split(",")[0].split()[0])
    return out


@pytest.fixture
def kernel(tmp_path: Path) -> str:
    k = tmp_path / "vmlinux"
    k.write_bytes(b"\x7fELF fake")
    return str(k)


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVE_VM_MACHINE", raising=False)


def test_microvm_when_it_boots_and_cached(tmp_path: Path, kernel: str) -> None:
    q, log = fake_qemu(tmp_path)
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg", warn=False) == "microvm"
    assert boots(log) == ["microvm"]
    # Cached: no second probe (per kernel+qemu+accelerator).
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg", warn=False) == "microvm"
    assert boots(log) == ["microvm"]
    # Another accelerator probes again.
    assert machine.choose(str(tmp_path / "c"), kernel, q, "kvm", warn=False) == "microvm"
    assert boots(log) == ["microvm", "microvm"]


def test_q35_when_microvm_does_not_boot(tmp_path: Path, kernel: str,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    q, log = fake_qemu(tmp_path, microvm_boots=False)
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg") == "q35"
    assert boots(log) == ["microvm", "q35"]
    err = capfd.readouterr().err
    assert "-M microvm unusable" in err and "using q35" in err
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg") == "q35"
    assert boots(log) == ["microvm", "q35"]  # cached


def test_q35_when_qemu_has_no_microvm(tmp_path: Path, kernel: str) -> None:
    q, log = fake_qemu(tmp_path, listed="pc q35")
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg", warn=False) == "q35"
    assert boots(log) == ["q35"]  # microvm is not even tried


def test_nothing_boots_nothing_cached(tmp_path: Path, kernel: str) -> None:
    q, log = fake_qemu(tmp_path, microvm_boots=False, q35_boots=False)
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg", warn=False) == "microvm"
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg", warn=False) == "microvm"
    assert boots(log) == ["microvm", "q35"] * 2  # probed again: a passing problem?


def test_env_overrides(tmp_path: Path, kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    q, log = fake_qemu(tmp_path)
    monkeypatch.setenv("COVE_VM_MACHINE", "q35")
    assert machine.choose(str(tmp_path / "c"), kernel, q, "tcg") == "q35"
    assert boots(log) == []
    monkeypatch.setenv("COVE_VM_MACHINE", "pc")
    with pytest.raises(CoveError, match="expected microvm or q35"):
        machine.choose(str(tmp_path / "c"), kernel, q, "tcg")


def test_command_lines(tmp_path: Path) -> None:
    """microvm gets virtio-mmio devices, q35 virtio-pci ones; a rootfs image replaces the
    rootfs's 9p share with a read-only virtio-blk disk."""
    args = ("qemu", "vmlinux", "initrd", "tcg")
    m = machine.qemu_command(*args, "microvm", 512, 1, "/r", None, False, [], "none", "h")
    assert m[m.index("-M") + 1].startswith("microvm,")
    assert "virtio-9p-device,fsdev=rootfs,mount_tag=rootfs" in m
    assert not any("virtio-blk" in a for a in m)
    p = machine.qemu_command(*args, "q35", 512, 1, "/r", ("/c/x,y.erofs", "erofs"), False,
                             [], "user", "h")
    assert p[p.index("-M") + 1] == "q35"
    assert "virtio-blk-pci,drive=rootimg" in p
    assert "file=/c/x,,y.erofs,if=none,id=rootimg,format=raw,readonly=on" in p
    assert not any("fsdev=rootfs" in a for a in p)
    assert "cove.rootimg=erofs" in p[p.index("-append") + 1]
    assert "virtio-net-pci,netdev=n0" in p


@pytest.mark.slow
@pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))
def test_vm_boots_on_q35(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real boot on q35 (what a host without a working microvm gets): PCI devices."""
    monkeypatch.setenv("COVE_VM_MACHINE", "q35")
    rt = runtime(env, VM_RUNTIME)
    b = env.bundle(base_config(["sleep", "1000"]))
    cid = env.id("vm")
    rt("run", "--detach", "--bundle", str(b.path), cid, timeout=180, check=True)
    st = json.loads((env.tmp / "state" / cid / "state.json").read_text())
    assert st["machine"] == "q35"
    r = rt("exec", cid, "sh", "-c", "ls /sys/bus/pci/devices | wc -l; exit 6", timeout=60)
    assert r.returncode == 6, r.stderr
    assert int(r.stdout.split()[0]) > 0  # microvm has no PCI bus at all
    rt("delete", "--force", cid, check=True)
    assert not no_qemu_left()
    assert os.listdir(env.tmp / "state") == []
