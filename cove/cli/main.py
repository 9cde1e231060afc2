"""`cove`: the user-facing command. For now: `run` of the built-in busybox image."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid

from cove.image.bundle import write_bundle
from cove.image.busybox import build_rootfs


def _data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/cove"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "cove")


def _image_rootfs(image: str) -> str:
    name = image.removeprefix("localhost/").removesuffix(":latest")
    if name != "busybox":
        raise SystemExit(f"cove: image {image!r}: only the built-in busybox image is "
                         "available until image pulls land")
    rootfs = os.path.join(_data_dir(), "images", "busybox", "rootfs")
    if not os.path.exists(os.path.join(rootfs, "bin", "busybox")):
        build_rootfs(rootfs)
    return rootfs


def _runtime() -> str:
    here = os.path.dirname(sys.argv[0]) if os.sep in sys.argv[0] else ""
    cand = os.path.join(here, "cove-runtime") if here else ""
    return cand if cand and os.path.exists(cand) else "cove-runtime"


def cmd_run(a: argparse.Namespace) -> int:
    rootfs = _image_rootfs(a.image)
    cid = a.name or f"cove-{uuid.uuid4().hex[:12]}"
    bundle = os.path.join(_data_dir(), "containers", cid)
    uid, _, gid = (a.user or "0").partition(":")
    write_bundle(bundle, rootfs, a.command or ["sh"], env=a.env, cwd=a.workdir or "/",
                 uid=int(uid), gid=int(gid or 0), terminal=False)
    rt = [_runtime(), "--root", os.path.join(_data_dir(), "runtime")]
    try:
        code = subprocess.call([*rt, "run", "--bundle", bundle, cid])
    finally:
        if a.rm:
            subprocess.call([*rt, "delete", "--force", cid], stderr=subprocess.DEVNULL)
            for f in ("config.json",):
                try:
                    os.unlink(os.path.join(bundle, f))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(bundle)
            except OSError:
                pass
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cove", description="Cove: run containers.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a command in a new container")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--name", help="container name")
    r.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    r.add_argument("-w", "--workdir", help="working directory in the container")
    r.add_argument("-u", "--user", help="UID[:GID]")
    r.add_argument("image")
    r.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.cmd == "run":
        return cmd_run(a)
    return 2


if __name__ == "__main__":
    sys.exit(main())
