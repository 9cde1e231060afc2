"""A build step's container: an overlay of the step's parent layers (mounted through
`cove.image.snapshots`, as `cove run` does), RUN executed there by `cove-runtime`
(the command, as the engine uses it) in the default secure configuration (Docker's
seccomp profile, docker's capability set, no new privileges, a network namespace of
its own with only loopback unless `host` is asked for), and the change it made taken
from the overlay's upper directory as a layer.

The image layer does not import the engine: the runtime is found as the engine finds
it ($COVE_RUNTIME, else next to the interpreter, else on PATH). Everything a step
makes (runtime state, mounts, the container dir) is removed when it ends, also on
Ctrl-C.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from cove.errors import CoveError
from cove.image import layers, snapshots
from cove.image.build import rootless
from cove.image.bundle import image_spec
from cove.image.store import Image, Store
from cove.oci.image import OCI_CONFIG, OCI_MANIFEST, ContainerConfig, Descriptor, ImageConfig
from cove.oci.image import Manifest as OciManifest

# docker's default capabilities, which `docker build` steps get too (runc's three leave
# root unable to chown or change users, which package managers need)
BUILD_CAPS = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
              "CAP_FSETID", "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
              "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]
# what the runtime may create in the rootfs to mount over: not part of a step's change
_MOUNT_POINTS = ("proc", "dev", "sys", "dev/pts", "dev/shm", "dev/mqueue", "sys/fs/cgroup")


def runtime_binary() -> str:
    env = os.environ.get("COVE_RUNTIME")
    if env:
        return env
    cand = os.path.join(os.path.dirname(sys.executable), "cove-runtime")
    return cand if os.path.exists(cand) else "cove-runtime"


@dataclass
class Mounted:
    cid: str
    cdir: str
    rootfs: str
    created_mount_points: set[str]
    # directories of the image that a mount point made in them copies up: (mode, uid,
    # gid) as the image has them, to leave them out when nothing else changed them
    copied_up: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _image(descs: list[Descriptor], diff_ids: list[str], cfg: ContainerConfig) -> Image:
    ic = ImageConfig(os="linux", architecture="", variant="", config=cfg,
                     diff_ids=list(diff_ids))
    m = OciManifest(OCI_MANIFEST, Descriptor(OCI_CONFIG, "sha256:" + "0" * 64, 0),
                    list(descs))
    return Image("", m, ic, b"", [])


def mount(store: Store, descs: list[Descriptor], diff_ids: list[str]) -> Mounted:
    """The merged rootfs of the layers `descs` (bottom first) over an empty upper dir; `unmount`
    it, then read its upper dir (`take_layer`), then `discard` it."""
    cid = "build-" + secrets.token_hex(6)
    if rootless.inside():
        return _mount_rootless(store, descs, diff_ids, cid)
    rf = snapshots.prepare(store, _image(descs, diff_ids, ContainerConfig()), cid)
    if rf.mode != "overlay":
        snapshots.release(store, cid)
        raise CoveError("build", "needs overlayfs (run as root)")
    made = {p for p in _MOUNT_POINTS if not os.path.lexists(os.path.join(rf.path, p))}
    return Mounted(cid, rf.container_dir, rf.path, made)


def _mount_rootless(store: Store, descs: list[Descriptor], diff_ids: list[str],
                    cid: str) -> Mounted:
    """`mount` in a rootless build's user namespace (cove.image.build.rootless): the
    same container directory as snapshots.prepare makes, with a `userxattr` overlay."""
    cdir = os.path.join(store.container_dir, cid)
    os.mkdir(cdir, 0o711)
    try:
        with open(os.path.join(cdir, "layers.json"), "w") as f:
            json.dump(list(diff_ids), f)
        snaps = [layers.ensure_snapshot(store, d.digest, d.media_type, i)
                 for d, i in zip(descs, diff_ids, strict=True)]
        path = rootless.mount_overlay(snaps, cdir, store.snapshot_dir)
    except BaseException:
        snapshots.release(store, cid)
        raise
    made = {p for p in _MOUNT_POINTS if not os.path.lexists(os.path.join(path, p))}
    return Mounted(cid, cdir, path, made)


def unmount(store: Store, m: Mounted) -> None:
    snapshots.release(store, m.cid, remove=False)


def discard(store: Store, m: Mounted) -> None:
    snapshots.release(store, m.cid)


def run(store: Store, m: Mounted, cfg: ContainerConfig, argv: list[str],
        env: list[str], network: str, out: Callable[[str], None],
        what: str, *, netns: str | None = None,
        mounts: list[dict[str, object]] | None = None) -> None:
    """Run `argv` in the mounted rootfs; its output goes to `out` line by line. A
    non-zero exit is an error naming `what` (the step), the code and the last lines.
    `network` none or host; `bridge` joins the namespace at `netns` (made by the
    caller, on the engine's default bridge). `mounts`: more OCI mounts (secrets)."""
    spec = image_spec(cfg, m.rootfs, args=argv, entrypoint="", env=env)
    lin = spec["linux"]
    proc = spec["process"]
    if os.geteuid() == 0:
        from cove.oci.seccomp_default import default_profile
        proc["capabilities"] = {k: list(BUILD_CAPS)
                                for k in ("bounding", "effective", "permitted")}
        # docker's profile allows some syscalls only with a capability: made for these
        lin["seccomp"] = default_profile(BUILD_CAPS)
        res = lin.setdefault("resources", {})
        if "devices" in res:
            res["devices"] += [{"allow": True, "type": t, "access": "m"} for t in "cb"]
    if network == "host":
        lin["namespaces"] = [n for n in lin["namespaces"] if n.get("type") != "network"]
    elif network == "bridge" and netns:
        lin["namespaces"] = [n if n.get("type") != "network" else
                             {"type": "network", "path": netns} for n in lin["namespaces"]]
    elif network not in ("none", "default", ""):
        raise CoveError(f"--network {network}", "a build step runs with none, host or "
                                                "bridge")
    if rootless.inside():
        rootless.adapt_spec(spec)
    if mounts:
        spec.setdefault("mounts", []).extend(mounts)
    bundle = os.path.join(m.cdir, "bundle")
    os.mkdir(bundle, 0o700)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    rt_root = os.path.join(store.root, "build-runtime")
    os.makedirs(rt_root, 0o700, exist_ok=True)
    base = [runtime_binary(), "--root", rt_root]
    if rootless.inside():
        base += ["--rootless", "true"]
    last: collections.deque[str] = collections.deque(maxlen=3)
    try:
        p = subprocess.Popen([*base, "run", "--bundle", bundle, m.cid],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError:
        raise CoveError(what, f"cannot run {base[0]}: not found") from None
    try:
        assert p.stdout is not None
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            last.append(line)
            out(line)
        rc = p.wait()
    except BaseException:
        # Ctrl-C (or any failure): the container goes, then its state
        subprocess.call([*base, "kill", m.cid, "KILL"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)
        raise
    finally:
        if os.path.exists(os.path.join(rt_root, m.cid)):
            subprocess.call([*base, "delete", "--force", m.cid], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if rc != 0:
        tail = " | ".join(x.strip() for x in last if x.strip())
        raise CoveError(what, f"returned a non-zero code: {rc}" +
                        (f" (last output: {tail})" if tail else ""), code=1)


def take_layer(store: Store, m: Mounted, compression: str) -> tuple[Descriptor, str]:
    """The change in `m`'s upper dir as a stored layer, unpacked as a snapshot for the
    next step; (descriptor, diffID)."""
    from cove.image.layerwrite import walk_upper, write_upper
    from cove.image.transfer import add_layer
    upper = os.path.join(m.cdir, "upper")
    # deepest first: a directory made only to hold mount points is left out too
    skip: set[str] = set()
    for p in sorted(m.created_mount_points, key=lambda x: x.count("/"), reverse=True):
        full = os.path.join(upper, p)
        if _empty(full) or (os.path.isdir(full) and not os.path.islink(full) and
                            all(f"{p}/{c}" in skip for c in os.listdir(full))):
            skip.add(p)
    for p in sorted(m.copied_up, key=lambda x: x.count("/"), reverse=True):
        full = os.path.join(upper, p)
        with contextlib.suppress(OSError):
            st = os.lstat(full)
            if (st.st_mode, st.st_uid, st.st_gid) == m.copied_up[p] and \
                    not _opaque(full) and all(f"{p}/{c}" in skip for c in os.listdir(full)):
                skip.add(p)
    fd, tar = _tmpfile(store)
    try:
        os.close(fd)
        write_upper(upper, tar, walk_upper(upper, skip))
        desc, diff_id = add_layer(store, tar, compression)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tar)
    layers.ensure_snapshot(store, desc.digest, desc.media_type, diff_id)
    return desc, diff_id


def _opaque(path: str) -> bool:
    from cove.image.layerwrite import is_opaque
    return is_opaque(path)


def _empty(path: str) -> bool:
    try:
        return (os.path.isdir(path) and not os.listdir(path)) or \
            (os.path.isfile(path) and os.path.getsize(path) == 0)
    except OSError:
        return False


def _tmpfile(store: Store) -> tuple[int, str]:
    import tempfile
    return tempfile.mkstemp(dir=store.tmp_dir, prefix="build-layer-", suffix=".tar")
