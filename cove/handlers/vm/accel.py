"""KVM or TCG, and the machines qemu offers: probed with bounded smoke boots, cached.

A stock kernel under a broken or paravirtual /dev/kvm can hang in KVM's instruction
emulator, so /dev/kvm opening is not enough: boot the kernel with a busybox-only
initramfs that prints a mark and powers off, and use KVM only if that mark comes back
within the bound. `COVE_VM_ACCEL=kvm|tcg` skips the probe. The same smoke boot tells
cove.handlers.vm.machine whether `-M microvm` boots here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

from cove.handlers.vm import initramfs

SMOKE_TIMEOUT = 8.0
MARK = "COVE-SMOKE-OK"
MACHINE_ARGS = {"microvm": "microvm,acpi=on,isa-serial=on,rtc=on", "q35": "q35"}


def key(*paths: str) -> str:
    parts = []
    for p in paths:
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


def machines(qemu_bin: str) -> set[str]:
    """The machine types `qemu -M help` lists (empty when it cannot say)."""
    try:
        r = subprocess.run([qemu_bin, "-M", "help"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    lines = r.stdout.decode(errors="replace").splitlines()
    return {ln.split()[0] for ln in lines[1:] if ln.strip()}


def cached(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def remember(path: str, value: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(value)
    os.rename(tmp, path)


def choose(cache_dir: str, kernel: str, qemu_bin: str, warn: bool = True) -> str:
    forced = os.environ.get("COVE_VM_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    path = os.path.join(cache_dir, f"accel-{key(kernel, qemu_bin, '/dev/kvm')}")
    got = cached(path)
    if got:
        return got
    accel, why = probe(cache_dir, kernel, qemu_bin)
    if accel == "tcg" and warn:
        os.write(2, f"cove-runtime: warning: vm: KVM unusable ({why}); using TCG "
                    "(software emulation, slow). Cached in " f"{path}\n".encode())
    remember(path, accel)
    return accel


def probe(cache_dir: str, kernel: str, qemu_bin: str) -> tuple[str, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as e:
        return "tcg", f"/dev/kvm: {e.strerror}"
    machine = "microvm" if "microvm" in machines(qemu_bin) else "q35"
    ok, why = smoke(cache_dir, kernel, qemu_bin, "kvm", machine, SMOKE_TIMEOUT)
    return ("kvm", "") if ok else ("tcg", why)


def smoke(cache_dir: str, kernel: str, qemu_bin: str, accel: str, machine: str,
          timeout: float) -> tuple[bool, str]:
    """Boot `kernel` on `machine` with a busybox-only initramfs; (booted, why not)."""
    from cove.handlers.vm.qemu import tsc_khz

    img = os.path.join(cache_dir, "smoke.img")
    if not os.path.exists(img):
        init = f"#!/bin/sh\n/bin/busybox echo {MARK}\n/bin/busybox poweroff -f\n"
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{img}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(initramfs.build("", [], init))
        os.rename(tmp, img)
    cmd = [qemu_bin, "-M", MACHINE_ARGS.get(machine, machine), *cpu_args(accel),
           "-m", "256", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-kernel", kernel, "-initrd", img,
           "-append", "console=ttyS0 quiet panic=-1 rdinit=/init tsc=reliable"
           + (tsc_khz() if accel == "tcg" else "")]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"a smoke boot ({accel}, -M {machine}) did not finish in {timeout:g}s"
    except OSError as e:
        return False, f"{qemu_bin}: {e.strerror}"
    if MARK.encode() in r.stdout:
        return True, ""
    err = r.stderr.decode(errors="replace").strip()[-200:]
    return False, f"a smoke boot ({accel}, -M {machine}) failed: {err or 'no mark'}"
