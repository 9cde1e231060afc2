"""A newc cpio initramfs writer and the module list a 9p-root guest needs.

Debian's kernel has virtio, 9p and virtio-blk as modules; the initramfs carries
them (in dependency order, resolved from modules.dep), a static busybox, and an
/init script that mounts the host's root over 9p and switches to it.
"""

from __future__ import annotations

import io
import os
import stat


class Cpio:
    """Writes the "newc" (070701) format the kernel unpacks; directories before contents."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = {""}

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        nameb = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(nameb), 0)
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08x" % f for f in fields)
        self.buf.write(hdr + nameb)
        self.buf.write(b"\0" * (-(len(hdr) + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def mkdir(self, path: str) -> None:
        path = path.strip("/")
        if path in self.dirs:
            return
        self.mkdir(os.path.dirname(path))
        self.dirs.add(path)
        self._entry(path, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        data = self.buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


def module_order(moddir: str, wanted: list[str]) -> list[str]:
    """Paths (relative to moddir) of `wanted` modules and their dependencies, deps first.

    Names are module names as modprobe takes them ("9pnet_virtio"); built-in ones
    (listed in modules.builtin) are skipped.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[mod] = rest.split()
            by_name[os.path.basename(mod).split(".ko")[0].replace("-", "_")] = mod
    builtin: set[str] = set()
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            builtin = {os.path.basename(x.strip()).split(".ko")[0].replace("-", "_")
                       for x in f}
    except OSError:
        pass
    out: list[str] = []

    def visit(mod: str) -> None:
        if mod in out:
            return
        for d in deps.get(mod, []):
            visit(d)
        out.append(mod)

    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in by_name:
            raise FileNotFoundError(f"module {name} not in {moddir}/modules.dep")
        visit(by_name[key])
    return out


def build(moddir: str, modules: list[str], init: str, busybox: str = "/bin/busybox",
          extra: dict[str, bytes] | None = None, later: list[str] | None = None) -> bytes:
    """The initramfs image: busybox (with sh, the applets /init uses), modules, /init.

    /modules.order lists `modules` (and their dependencies) in load order; /modules.later
    the `later` ones not already there, for /init to load only when it needs them."""
    c = Cpio()
    for d in ("dev", "proc", "sys", "newroot", "lib/modules", "bin", "sbin"):
        c.mkdir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    c.symlink("bin/sh", "busybox")
    order = module_order(moddir, modules) if modules else []
    for rel in order:
        with open(os.path.join(moddir, rel), "rb") as f:
            c.file(f"lib/modules/{os.path.basename(rel)}", f.read())
    c.file("modules.order", "".join(os.path.basename(r) + "\n" for r in order).encode())
    more = [m for m in module_order(moddir, later) if m not in order] if later else []
    for rel in more:
        with open(os.path.join(moddir, rel), "rb") as f:
            c.file(f"lib/modules/{os.path.basename(rel)}", f.read())
    c.file("modules.later", "".join(os.path.basename(r) + "\n" for r in more).encode())
    for path, data in (extra or {}).items():
        c.file(path, data, 0o755)
    c.file("init", init.encode(), 0o755)
    return c.finish()
