"""The guest's boot: Cove's own initramfs (written in Python, cached by digest) and its /init.

/init (busybox sh) loads the modules, builds a tmpfs root with the host's /usr and
Cove's package shared read-only over 9p, the container's rootfs (9p, or an erofs/squashfs
image on virtio-blk: cove.handlers.vm.rootimg; read-only) under a tmpfs-upper overlay unless
root.readonly, the bind-mount shares, the network, and
switches to the agent (cove/handlers/vm/agent.py, run by the host's python from the /usr share).
"""

from __future__ import annotations

import hashlib
import os

from cove.handlers.vm import initramfs

MODULES = ["virtio_mmio", "virtio_pci", "9pnet_virtio", "9p", "virtio_console", "overlay",
           "virtio_net"]
LATER = ["virtio_blk", "crc32c_generic", "erofs", "squashfs"]  # for a rootfs image only
# (crc32c_generic: libcrc32c, which erofs needs, asks the crypto API for "crc32c")
GUEST_COVE = "/run/cove/src"   # sys.path entry holding the `cove` package
AGENT = (f"import sys; sys.path.insert(0, {GUEST_COVE!r}); "
         "from cove.handlers.vm.agent import main; main()")

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
arg() { for a in $(cat /proc/cmdline); do case $a in cove.$1=*) echo "${a#*=}";; esac; done; }
fail() { echo "cove-vm-init: $*" >/dev/console; echo o >/proc/sysrq-trigger; sleep 5; }
ninep() { # tag dir [ro] [cache]
    mkdir -p "$2"
    i=0
    o="trans=virtio,version=9p2000.L,msize=262144,cache=${4:-loose}${3:+,ro}"
    until mount -t 9p -o "$o" "$1" "$2"
    do i=$((i + 1)); [ $i -lt 50 ] || fail "cannot mount 9p share $1"; sleep 0.05; done
}
R=/newroot
mkdir -p $R
mount -t tmpfs -o mode=755 root $R
echo "cove-vm-init: modules $(cut -d" " -f1 /proc/uptime)s"
ninep usr $R/usr ro
ln -s usr/bin $R/bin; ln -s usr/sbin $R/sbin; ln -s usr/lib $R/lib; ln -s usr/lib64 $R/lib64
mkdir -p $R/etc $R/tmp $R/proc $R/sys $R/dev $R/run/cove $R/root
chmod 1777 $R/tmp
cp /etc/* $R/etc/ 2>/dev/null
ninep cove $R@GUEST_COVE@/cove ro
lower() { # dir: the container's rootfs, read-only: a 9p share or an image on /dev/vda
    img=$(arg rootimg)
    if [ -z "$img" ] || [ "$img" = - ]; then ninep rootfs "$1" ro; return; fi
    for m in $(cat /modules.later); do insmod /lib/modules/$m || echo "insmod $m failed"; done
    mkdir -p "$1"
    i=0
    until e=$(mount -t "$img" -o ro /dev/vda "$1" 2>&1)
    do i=$((i + 1)); [ $i -lt 50 ] || fail "cannot mount the $img rootfs image: $e"; sleep 0.05
    done
}
if [ "$(arg ro)" = 1 ]; then
    lower $R/run/cove/rootfs
else
    lower $R/run/cove/lower
    mkdir -p $R/run/cove/rw
    mount -t tmpfs -o mode=755 rw $R/run/cove/rw
    mkdir -p $R/run/cove/rw/upper $R/run/cove/rw/work $R/run/cove/rootfs
    o=lowerdir=$R/run/cove/lower,upperdir=$R/run/cove/rw/upper,workdir=$R/run/cove/rw/work
    mount -t overlay -o $o overlay $R/run/cove/rootfs || fail "overlay failed"
fi
n=0
for mode in $(arg binds | tr , ' '); do
    case $mode in
        ro) ninep m$n $R/run/cove/m$n ro;;
        rw) ninep m$n $R/run/cove/m$n "" none;;
    esac
    n=$((n + 1))
done
ip link set lo up
if [ "$(arg net)" = user ]; then
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
    echo "nameserver 10.0.2.3" > $R/etc/resolv.conf
fi
hostname "$(arg hostname)"
echo "cove-vm-init: up $(cut -d" " -f1 /proc/uptime)s"
mount --move /dev $R/dev
mount --move /proc $R/proc
mount --move /sys $R/sys
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup
for c in $(cat $R/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > $R/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
exec switch_root $R /usr/bin/python3 -I -S -c "@AGENT@"
"""

_ETC = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "etc/group": b"root:x:0:\n",
        "etc/hosts": b"127.0.0.1 localhost\n"}


def init_script() -> str:
    return INIT.replace("@GUEST_COVE@", GUEST_COVE).replace("@AGENT@", AGENT)


def initrd(cache_dir: str, moddir: str, busybox: str = "/bin/busybox") -> str:
    """The path of the initramfs for this kernel's modules, built once per digest."""
    h = hashlib.sha256()
    for part in (init_script(), moddir, " ".join(MODULES), " ".join(LATER)):
        h.update(part.encode() + b"\0")
    for path in (busybox, os.path.join(moddir, "modules.dep"), "/etc/ld.so.cache"):
        try:
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\0".encode())
        except OSError:
            pass
    path = os.path.join(cache_dir, f"initrd-{h.hexdigest()[:16]}.img")
    if os.path.exists(path):
        return path
    extra = dict(_ETC)
    try:
        with open("/etc/ld.so.cache", "rb") as f:
            extra["etc/ld.so.cache"] = f.read()
    except OSError:
        pass
    mods = [m for m in MODULES if _has_module(moddir, m)]
    later = [m for m in LATER if _has_module(moddir, m)]
    image = initramfs.build(moddir, mods, init_script(), busybox, extra=extra, later=later)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(image)
    os.rename(tmp, path)
    return path


def _has_module(moddir: str, name: str) -> bool:
    try:
        initramfs.module_order(moddir, [name])
        return True
    except FileNotFoundError:
        return False


def vmlinux(cache_dir: str, kernel: str) -> str:
    """The uncompressed ELF kernel, extracted once from the bzImage and cached.

    qemu boots it straight through its PVH entry (as Firecracker boots vmlinux): the
    bzImage's decompressor alone takes seconds under TCG. Falls back to the bzImage.
    """
    try:
        st = os.stat(kernel)
    except OSError:
        return kernel
    key = hashlib.sha256(f"{kernel}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"vmlinux-{key}")
    if os.path.exists(path):
        return path
    with open(kernel, "rb") as f:
        data = f.read()
    out = b""
    for magic, how in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"),
                       (b"\x28\xb5\x2f\xfd", "zstd")):
        i = data.find(magic)
        if i < 0:
            continue
        try:
            if how == "xz":
                import lzma

                out = lzma.LZMADecompressor().decompress(data[i:])
            elif how == "gzip":
                import zlib

                out = zlib.decompressobj(31).decompress(data[i:])
            else:
                import zstandard

                out = zstandard.ZstdDecompressor().decompressobj().decompress(data[i:])
        except Exception:  # not the payload: a stray magic; try the next format
            continue
        if out[:4] == b"\x7fELF":
            break
        out = b""
    if not out:
        return kernel
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.rename(tmp, path)
    return path
