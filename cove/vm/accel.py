"""KVM or TCG: probed once with a bounded smoke boot, the answer cached per kernel+qemu.

A stock kernel under a broken or paravirtual /dev/kvm can hang in KVM's instruction
emulator, so /dev/kvm opening is not enough: boot the kernel with a busybox-only
initramfs that prints a mark and powers off, and use KVM only if that mark comes back
within the bound. `COVE_VM_ACCEL=kvm|tcg` skips the probe.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

from cove.vm import initramfs

SMOKE_TIMEOUT = 8.0
MARK = "COVE-SMOKE-OK"


def _key(kernel: str, qemu_bin: str) -> str:
    parts = []
    for p in (kernel, qemu_bin, "/dev/kvm"):
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_rdev}")
        except OSError:
            parts.append(f"{p}:-")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def cpu_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
    return ["-accel", "tcg", "-cpu", "max"]


def choose(cache_dir: str, kernel: str, qemu_bin: str, warn: bool = True) -> str:
    forced = os.environ.get("COVE_VM_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    path = os.path.join(cache_dir, f"accel-{_key(kernel, qemu_bin)}")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        pass
    accel, why = probe(cache_dir, kernel, qemu_bin)
    if accel == "tcg" and warn:
        os.write(2, f"cove-runtime: warning: vm: KVM unusable ({why}); using TCG "
                    "(software emulation, slow). Cached in " f"{path}\n".encode())
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(accel)
    os.rename(path + ".tmp", path)
    return accel


def probe(cache_dir: str, kernel: str, qemu_bin: str) -> tuple[str, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as e:
        return "tcg", f"/dev/kvm: {e.strerror}"
    smoke = os.path.join(cache_dir, "smoke.img")
    if not os.path.exists(smoke):
        os.makedirs(cache_dir, exist_ok=True)
        init = f"#!/bin/sh\n/bin/busybox echo {MARK}\n/bin/busybox poweroff -f\n"
        with open(smoke + ".tmp", "wb") as f:
            f.write(initramfs.build("", [], init))
        os.rename(smoke + ".tmp", smoke)
    cmd = [qemu_bin, "-M", "microvm,acpi=on,isa-serial=on,rtc=on", *cpu_args("kvm"),
           "-m", "256", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-kernel", kernel, "-initrd", smoke,
           "-append", "console=ttyS0 quiet panic=-1 rdinit=/init tsc=reliable"]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=SMOKE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "tcg", f"a smoke boot did not finish in {SMOKE_TIMEOUT:g}s"
    if MARK.encode() in r.stdout:
        return "kvm", ""
    return "tcg", f"a smoke boot failed: {r.stderr.decode(errors='replace').strip()[-200:]}"
