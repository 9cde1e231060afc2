"""Which qemu machine a VM gets, and the VM's qemu command line.

`-M microvm` (virtio-mmio, no PCI bus or firmware to go through: the quickest boot)
where qemu has it and a smoke boot of this kernel under this accelerator prints its mark;
`-M q35` (virtio-pci) otherwise. The answer is cached per kernel+qemu+accelerator, as the
KVM probe's is; `COVE_VM_MACHINE=microvm|q35` overrides it.
"""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.handlers.vm import accel as accels
from cove.handlers.vm.guestcfg import Share, src_dir

MACHINES = ("microvm", "q35")
PROBE_TIMEOUT = {"kvm": 8.0, "tcg": 45.0}


def choose(cache_dir: str, kernel: str, qemu_bin: str, accel: str, warn: bool = True) -> str:
    forced = os.environ.get("COVE_VM_MACHINE", "")
    if forced:
        if forced not in MACHINES:
            raise CoveError(f"COVE_VM_MACHINE={forced}", "expected microvm or q35")
        return forced
    path = os.path.join(cache_dir, f"machine-{accels.key(kernel, qemu_bin)}-{accel}")
    got = accels.cached(path)
    if got in MACHINES:
        return got
    listed = accels.machines(qemu_bin)
    timeout = PROBE_TIMEOUT.get(accel, 45.0)
    if "microvm" in listed:
        ok, why = accels.smoke(cache_dir, kernel, qemu_bin, accel, "microvm", timeout)
        if ok:
            accels.remember(path, "microvm")
            return "microvm"
    else:
        why = "qemu lists no microvm machine"
    ok, _ = accels.smoke(cache_dir, kernel, qemu_bin, accel, "q35", timeout)
    if not ok:
        # Neither booted: nothing is cached (the VM's own boot error will say more).
        return "microvm" if "microvm" in listed else "q35"
    if warn:
        os.write(2, f"cove-runtime: warning: vm: -M microvm unusable ({why}); using q35. "
                    f"Cached in {path}\n".encode())
    accels.remember(path, "q35")
    return "q35"


def qemu_command(qemu_bin: str, kernel: str, initrd: str, accel: str, machine: str, mem: int,
                 cpus: int, rootfs: str, rootimg: tuple[str, str] | None, ro_root: bool,
                 shares: list[Share], net: str, hostname: str) -> list[str]:
    """The VM's qemu command line. `rootimg`: (image path, erofs|squashfs) to attach as
    virtio-blk instead of sharing `rootfs` over 9p."""
    from cove.handlers.vm.qemu import tsc_khz

    sfx = "device" if machine == "microvm" else "pci"
    binds = ",".join("ro" if s.ro else "rw" for s in shares)
    append = ("console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init cgroup_no_v1=all "
              f"tsc=reliable{tsc_khz()} cove.ro={int(ro_root)} cove.net={net} "
              f"cove.binds={binds or '-'} cove.hostname={hostname or 'cove'} "
              f"cove.rootimg={rootimg[1] if rootimg else '-'}")
    cmd = [qemu_bin, "-M", accels.MACHINE_ARGS[machine], *accels.cpu_args(accel), "-smp", str(cpus),
           "-m", str(mem), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-serial", "file:console.log", "-kernel", kernel, "-initrd", initrd,
           "-append", append, "-qmp", "unix:qmp.sock,server=on,wait=off"]
    fs = [Share("usr", "/usr", True), Share("cove", src_dir(), True)]
    if rootimg is None:
        fs.append(Share("rootfs", rootfs, True))
    else:
        cmd += ["-drive", f"file={_esc(rootimg[0])},if=none,id=rootimg,format=raw,readonly=on",
                "-device", f"virtio-blk-{sfx},drive=rootimg"]
    for s in [*fs, *shares]:
        cmd += ["-fsdev", f"local,id={s.tag},path={_esc(s.path)},security_model=none,"
                          f"multidevs=remap{',readonly=on' if s.ro else ''}",
                "-device", f"virtio-9p-{sfx},fsdev={s.tag},mount_tag={s.tag}"]
    cmd += ["-device", f"virtio-serial-{sfx},max_ports=2",
            "-chardev", "socket,id=agent,path=serial.sock",
            "-device", "virtserialport,chardev=agent,name=cove.0"]
    if net == "user":
        cmd += ["-netdev", "user,id=n0", "-device", f"virtio-net-{sfx},netdev=n0"]
    return cmd


def _esc(path: str) -> str:
    return path.replace(",", ",,")  # qemu's option syntax
