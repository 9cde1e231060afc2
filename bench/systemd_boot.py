"""bench/overhead's systemd row (`bench/overhead --systemd-boot`): boot time of a Debian
bookworm system with systemd to `systemctl is-system-running` answering running (or
degraded), as a Cove system container (`cove run -d --systemd=true`) and as a qemu VM.

The rootfs is the one tests/engine/test_systemd_container.py makes with debootstrap and
caches (/var/cache/cove-tests/debian-bookworm-systemd, $COVE_TEST_DEBIAN_SYSTEMD).

- container: from `cove run` to the first `cove exec NAME systemctl is-system-running
  --wait` that answers (a state root of its own in a temp dir, --network none), then
  `cove stop` and `cove rm`.
- vm: LXD is not installed here, so the comparison is qemu with the vm handler's own
  parts: its kernel (the host's Debian kernel, as an uncompressed vmlinux), its
  accelerator and machine choice (KVM, -M microvm where they work), and an initramfs made
  by its builder whose /init mounts the same rootfs read-only over 9p under a tmpfs
  overlay and switch_roots to systemd as pid 1. (The vm handler itself can't boot it:
  its guest's pid 1 is Cove's agent, and `--systemd` with `--isolation vm` is refused.)
  A unit added in the overlay writes `systemctl is-system-running --wait` and the
  guest's uptime to the serial console, then powers off; the time is from qemu's start
  to that line.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CACHE = os.environ.get("COVE_TEST_DEBIAN_SYSTEMD", "/var/cache/cove-tests/debian-bookworm-systemd")
IMAGE = "cove-bench/debian-systemd"
MARK = "COVE-BOOTED"
BOOT_TIMEOUT = 300.0

VM_INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
mkdir -p /lower /rw /newroot
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro rootfs /lower
do i=$((i + 1)); [ $i -lt 50 ] || { echo "bench-init: no 9p rootfs"; poweroff -f; }; sleep 0.05
done
mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot
S=/newroot/etc/systemd/system
mkdir -p $S/multi-user.target.wants
cat > $S/cove-bench-ready.service <<'EOF'
[Unit]
Description=bench/overhead: say when the system is up
[Service]
Type=simple
ExecStart=/etc/systemd/system/cove-bench-ready
EOF
cat > $S/cove-bench-ready <<'EOF'
#!/bin/sh
state=$(systemctl is-system-running --wait)
failed=$(systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " ")
echo "@MARK@ $state $(cut -d" " -f1 /proc/uptime) failed: $failed" > /dev/ttyS0
systemctl poweroff --force --force
EOF
chmod 755 $S/cove-bench-ready
ln -s /etc/systemd/system/cove-bench-ready.service $S/multi-user.target.wants/
umount /proc /sys /dev
exec switch_root /newroot /lib/systemd/systemd
""".replace("@MARK@", MARK)


def _cove(root: str, *args: str, timeout: float = 120, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", root, *args],
                       capture_output=True, text=True, timeout=timeout, cwd=str(HERE))
    if check and r.returncode != 0:
        raise RuntimeError(f"cove {' '.join(args)}: {r.stderr.strip()}")
    return r


def container_boots(n: int) -> tuple[list[float], str]:
    """n boots of the systemd container; (seconds each, the last state)."""
    from cove.image.assemble import build_image
    from cove.image.store import Store
    from cove.oci.image import ContainerConfig

    root = tempfile.mkdtemp(prefix="cove-bench-sd-")
    times: list[float] = []
    state = ""
    try:
        layer = os.path.join(root, "base.tar")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C",
                        CACHE, "-cf", layer, "."], check=True, timeout=600)
        build_image(Store(root), [layer], ContainerConfig(
            cmd=["/sbin/init"], env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                     "/usr/bin:/sbin:/bin"]),
            names=(IMAGE,), compression="none", unpack=False)
        os.unlink(layer)
        for i in range(n + 1):  # the first: a warm-up (unpacks the image), not counted
            name = f"sd{i}"
            t0 = time.monotonic()
            _cove(root, "run", "-d", "--network", "none", "--systemd=true", "--name", name,
                  IMAGE)
            while True:
                r = _cove(root, "exec", name, "systemctl", "is-system-running", "--wait",
                          check=False)
                if "Failed to connect to bus" not in r.stderr or time.monotonic() - t0 > 90:
                    break
                time.sleep(0.05)
            took = time.monotonic() - t0
            state = r.stdout.strip()
            if state not in ("running", "degraded"):
                raise RuntimeError(f"container boot: {state!r} {r.stderr.strip()}")
            if i:
                times.append(took)
                print(f"systemd container boot {i}: {took:.2f} s ({state})", file=sys.stderr,
                      flush=True)
            _cove(root, "stop", name)
            _cove(root, "rm", name)
    finally:
        _cove(root, "supervisor", "stop", check=False)
        subprocess.run(["umount", "-R", root], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return times, state


def vm_boots(n: int) -> tuple[list[float], str, str]:
    """n qemu boots; (seconds each from qemu's start, the last state line, accel/machine)."""
    from cove.handlers.vm import accel as accels
    from cove.handlers.vm import guest, initramfs, machine, qemu
    from cove.handlers.vm.guestcfg import cache_dir

    found, qbin = qemu.find_kernel(), qemu.qemu_binary()
    if found is None or qbin is None:
        raise RuntimeError(qemu.missing() or "no kernel or qemu")
    kernel, moddir = found
    cache = cache_dir()
    accel = accels.choose(cache, kernel, qbin)
    mach = machine.choose(cache, kernel, qbin, accel)
    mods = [m for m in ("virtio_mmio", "virtio_pci", "9pnet_virtio", "9p", "overlay")
            if guest._has_module(moddir, m)]
    work = tempfile.mkdtemp(prefix="cove-bench-vm-")
    times: list[float] = []
    line = ""
    try:
        initrd = os.path.join(work, "initrd.img")
        Path(initrd).write_bytes(initramfs.build(moddir, mods, VM_INIT))
        sfx = "device" if mach == "microvm" else "pci"
        cmd = [qbin, "-M", accels.MACHINE_ARGS[mach], *accels.cpu_args(accel), "-smp", "2",
               "-m", "1024", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-serial", "stdio", "-kernel", guest.vmlinux(cache, kernel),
               "-initrd", initrd, "-append", "console=ttyS0 quiet loglevel=3 panic=-1 "
               "rdinit=/init systemd.show_status=0",
               "-fsdev", f"local,id=rootfs,path={CACHE},security_model=none,readonly=on,"
                         "multidevs=remap",
               "-device", f"virtio-9p-{sfx},fsdev=rootfs,mount_tag=rootfs"]
        for _ in range(n):
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, text=True, errors="replace")
            out: list[str] = []
            took = None
            # a boot that never says so (seen once here under TCG, after 6 min) is killed
            import threading
            stuck = threading.Timer(BOOT_TIMEOUT, p.kill)
            stuck.start()
            try:
                assert p.stdout is not None
                for ln in p.stdout:
                    out.append(ln)
                    if MARK in ln:
                        took = time.monotonic() - t0
                        line = ln.strip()
                        break
                p.wait(timeout=60)
            finally:
                stuck.cancel()
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if took is None:
                raise RuntimeError(f"vm boot {len(times) + 1}: no {MARK} line within "
                                   f"{BOOT_TIMEOUT:.0f} s; last output: {''.join(out[-5:])}")
            times.append(took)
            print(f"qemu vm boot {len(times)}: {took:.2f} s ({line})", file=sys.stderr,
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return times, line, f"{accel}, -M {mach}"


def run(n: int) -> dict[str, Any]:
    """The row, printed and returned."""
    if not os.path.isfile(CACHE + ".ok"):
        sys.exit(f"bench/overhead --systemd-boot: no {CACHE} (run "
                 "tests/engine/test_systemd_container.py once: it makes it)")
    res: dict[str, Any] = {"n": n, "rootfs": CACHE,
                           "lxd": shutil.which("lxd") or shutil.which("lxc") or "not installed"}
    ct, state = container_boots(n)
    res["container"] = {"times": ct, "median": statistics.median(ct), "state": state}
    try:
        vt, line, how = vm_boots(n)
        res["vm"] = {"times": vt, "median": statistics.median(vt), "state": line, "how": how}
    except RuntimeError as e:
        res["vm"] = {"error": str(e)}
    c, v = res["container"], res["vm"]
    print(f"systemd boot to is-system-running (median of {n}): container "
          f"{c['median']:.2f} s ({c['state']}; {', '.join(f'{t:.2f}' for t in c['times'])})")
    if "median" in v:
        print(f"  qemu vm ({v['how']}): {v['median']:.2f} s "
              f"({', '.join(f'{t:.2f}' for t in v['times'])}); guest said: {v['state']}")
        print(f"  vm / container: {v['median'] / c['median']:.1f}x")
    else:
        print(f"  qemu vm: n/a ({v['error']})")
    print(f"  LXD: {res['lxd']}")
    return res
