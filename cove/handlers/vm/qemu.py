"""Boot Debian's kernel under qemu: the kernel/qemu finders shared by the vm handler,
and a script runner (the host's root shared read-only over 9p) used by the tests.

The guest gets a pure cgroup2 hierarchy at /sys/fs/cgroup with every controller
enabled in the root's subtree_control, tmpfs on /tmp and /run, a small scratch
virtio disk (/dev/vda, for io.max), and runs one shell script as pid 1's child;
its output comes back on the serial console, with a `COVE-VM-EXIT=<rc>` line.

    python -m cove.handlers.vm.qemu 'cat /sys/fs/cgroup/cgroup.subtree_control'
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from cove.handlers.vm import initramfs

MODULES = ["virtio_mmio", "virtio_pci", "9pnet_virtio", "9p", "virtio_blk"]
CONTROLLERS = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"]
EXIT_MARK = "COVE-VM-EXIT="

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
    insmod /lib/modules/$m || echo "vm-init: insmod $m failed"
done
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /newroot
do
    i=$((i + 1)); [ $i -lt 50 ] || { echo "vm-init: no 9p root"; echo o >/proc/sysrq-trigger; }
    sleep 0.1
done
# The guest's /tmp is its own tmpfs; a checkout under the host's /tmp (CI clones
# there) stays visible at its path through a bind moved over the new tmpfs.
KEEP="@KEEP@"
if [ -n "$KEEP" ]; then mkdir -p /keep; mount --bind /newroot$KEEP /keep; fi
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
if [ -n "$KEEP" ]; then mkdir -p /newroot$KEEP; mount --move /keep /newroot$KEEP; fi
mount -t tmpfs -o mode=755 run /newroot/run
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup
for c in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
    case " @CONTROLLERS@ " in *" $c "*)
        echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control ||
            echo "vm-init: cannot enable $c";;
    esac
done
cp /cmd.sh /newroot/tmp/.vm-cmd.sh
cp /pid1.sh /newroot/tmp/.vm-pid1.sh
exec switch_root /newroot /bin/sh /tmp/.vm-pid1.sh
"""

# pid 1 after switch_root (the host's /bin/sh): run the script, report, power off.
PID1 = r"""export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 TERM=dumb
cd /tmp
echo vm-init: up $(cut -d' ' -f1 /proc/uptime)s
sh /tmp/.vm-cmd.sh </dev/null
rc=$?
echo
echo "COVE-VM-EXIT=$rc"
echo o >/proc/sysrq-trigger
# Nothing that execs: the 9p root goes away as the kernel powers off.
while :; do :; done
"""


def find_kernel() -> tuple[str, str] | None:
    """(vmlinuz, modules dir) of an installed Debian kernel with its modules, newest first."""
    env = os.environ.get("COVE_VM_KERNEL")
    cands = [env] if env else sorted(glob.glob("/boot/vmlinuz-*"), reverse=True)
    for k in cands:
        ver = os.path.basename(k).removeprefix("vmlinuz-")
        moddir = f"/lib/modules/{ver}"
        if os.access(k, os.R_OK) and os.path.isfile(f"{moddir}/modules.dep"):
            return k, moddir
    return None


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def missing() -> str | None:
    """Why a VM cannot be booted here, or None."""
    if qemu_binary() is None:
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    if find_kernel() is None:
        return "no /boot/vmlinuz-* with /lib/modules (apt-get install linux-image-amd64)"
    if not os.path.exists("/bin/busybox"):
        return "/bin/busybox not installed (apt-get install busybox-static)"
    return None


class Result:
    def __init__(self, output: str, rc: int | None, wall: float, guest_up: float | None) -> None:
        self.output = output
        self.rc = rc  # the script's exit status; None when the guest never reported it
        self.wall = wall
        self.guest_up = guest_up  # guest uptime when the script started (boot time)


def _pump(p: subprocess.Popen[bytes], out: list[str], echo: bool) -> None:
    assert p.stdout is not None
    for raw in p.stdout:
        line = raw.decode(errors="replace").replace("\r", "")
        out.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()


def tsc_khz() -> str:
    """The host's TSC rate for tsc_early_khz=: under TCG the guest's PIT calibration
    fails often, and microvm has no HPET to fall back to (the boot then hangs)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return f" tsc_early_khz={int(float(line.split(':')[1]) * 1000)}"
    except (OSError, ValueError):
        pass
    return ""


def run(script: str, *, timeout: float = 300, mem_mb: int = 1024, cpus: int = 2,
        echo: bool = False) -> Result:
    """Boot, run `script` (sh) in the guest as root, power off; return what it printed."""
    why = missing()
    found = find_kernel()
    if why or found is None:
        raise RuntimeError(why)
    kernel, moddir = found
    with tempfile.TemporaryDirectory(prefix="cove-vm-") as tmp:
        import cove
        # the directory that holds the `cove` package (a checkout, or site-packages)
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(cove.__file__)))
        keep = checkout if checkout.startswith("/tmp/") else ""
        init = INIT.replace("@CONTROLLERS@", " ".join(CONTROLLERS)).replace("@KEEP@", keep)
        image = initramfs.build(moddir, MODULES, init,
                                extra={"cmd.sh": script.encode(), "pid1.sh": PID1.encode()})
        initrd = os.path.join(tmp, "initrd")
        with open(initrd, "wb") as f:
            f.write(image)
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
        cmd = [
            qemu_binary() or "qemu-system-x86_64",
            "-M", "microvm,acpi=on,isa-serial=on,rtc=on",
            "-accel", "tcg", "-cpu", "max", "-smp", str(cpus), "-m", str(mem_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio",
            "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init "
                       "cgroup_no_v1=all tsc=reliable" + tsc_khz(),
            "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-device,fsdev=root,mount_tag=hostroot",
            "-drive", f"file={disk},if=none,id=scratch,format=raw",
            "-device", "virtio-blk-device,drive=scratch",
        ]
        t0 = time.monotonic()
        out: list[str] = []
        with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as p:
            reader = threading.Thread(target=_pump, args=(p, out, echo), daemon=True)
            reader.start()
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                out.append(f"\n[host: qemu killed after {timeout:g}s]\n")
            reader.join(5)
        wall = time.monotonic() - t0
    text = "".join(out)
    rc = up = None
    for line in text.splitlines():
        at = line.find(EXIT_MARK)
        if at >= 0:
            # a kernel message may share the console line, before or after the mark
            digits = line[at + len(EXIT_MARK):].lstrip()
            n = len(digits) - len(digits.lstrip("0123456789"))
            rc = int(digits[:n]) if n else -1
        elif line.startswith("vm-init: up "):
            up = float(line.split()[2].rstrip("s"))
    return Result(text, rc, wall, up)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    r = run(" ".join(argv), echo=True)
    print(f"[host: wall {r.wall:.1f}s, guest up at {r.guest_up}s, rc {r.rc}]")
    return 1 if r.rc is None else r.rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
