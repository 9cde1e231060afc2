"""`cove run IMAGE [CMD...]` and `cove rm`: an image's config turned into an OCI bundle
over an overlayfs rootfs, run by cove-runtime."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from cove.cli.common import registry_flags, registry_options
from cove.errors import CoveError
from cove.image.store import Store


def runtime_binary() -> str:
    env = os.environ.get("COVE_RUNTIME")
    if env:
        return env
    here = os.path.dirname(sys.argv[0]) if os.sep in sys.argv[0] else ""
    cand = os.path.join(here, "cove-runtime") if here else ""
    if cand and os.path.exists(cand):
        return cand
    cand = os.path.join(os.path.dirname(sys.executable), "cove-runtime")
    return cand if os.path.exists(cand) else "cove-runtime"


def runtime_cmd(st: Store) -> list[str]:
    return [runtime_binary(), "--root", os.path.join(st.root, "runtime")]


def find_image(st: Store, ref: str, a: argparse.Namespace) -> str:
    """The image's digest: the local store, the built-in busybox, else a pull."""
    from cove.image import builtin
    try:
        return st.resolve(ref)
    except CoveError:
        pass
    if builtin.is_builtin(ref):
        return builtin.ensure_busybox(st)
    from cove.image import progress
    from cove.image.transfer import RegistryOptions, pull
    opts = registry_options(a)
    assert isinstance(opts, RegistryOptions)
    return pull(st, ref, opts=opts, progress=progress.choose(a.quiet))


def cmd_run(a: argparse.Namespace) -> int:
    from cove.image import snapshots
    from cove.image.bundle import image_spec
    st = Store(a.root)
    digest = find_image(st, a.image, a)
    img = st.image(digest)
    cid = a.name or f"cove-{uuid.uuid4().hex[:12]}"
    if not cid.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise CoveError(f"--name {cid!r}", "use letters, digits, '-', '_' and '.'")
    rt = runtime_cmd(st)
    rootfs = snapshots.prepare(st, img, cid)
    code = 1
    try:
        spec = image_spec(img.config.config, rootfs.path, args=a.command,
                          entrypoint=a.entrypoint, env=a.env, workdir=a.workdir,
                          user=a.user, terminal=a.tty, hostname=a.hostname or cid[:12])
        with open(os.path.join(rootfs.container_dir, "config.json"), "w") as f:
            json.dump(spec, f, indent=1)
        stdin = None if a.interactive or a.tty else subprocess.DEVNULL
        try:
            code = subprocess.call([*rt, "run", "--bundle", rootfs.container_dir, cid],
                                   stdin=stdin)
        except KeyboardInterrupt:
            code = 130
    finally:
        subprocess.call([*rt, "delete", "--force", cid], stderr=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL)
        snapshots.release(st, cid, remove=a.rm)
    return code


def cmd_rm(a: argparse.Namespace) -> int:
    from cove.image import snapshots
    st = Store(a.root)
    rc = 0
    for cid in a.containers:
        if not os.path.isdir(os.path.join(st.container_dir, cid)) or "/" in cid:
            print(f"cove: container {cid}: no such container", file=sys.stderr)
            rc = 1
            continue
        with contextlib.suppress(OSError):
            subprocess.call([*runtime_cmd(st), "delete", "--force", cid],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        snapshots.release(st, cid, remove=True)
        print(cid)
    return rc


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run a command in a new container from an image")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--name", help="container name")
    r.add_argument("--hostname", help="container host name")
    r.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (or KEY)")
    r.add_argument("-w", "--workdir", help="working directory in the container")
    r.add_argument("-u", "--user", help="USER[:GROUP] (names or numbers)")
    r.add_argument("--entrypoint", help="replace the image's Entrypoint ('' clears it)")
    r.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    r.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    registry_flags(r)
    r.add_argument("image")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("rm", help="remove stopped containers (kept by run without --rm)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)
