"""`create`: a new container's rootfs, bundle and record (status `created`), everything
that can be checked checked first and nothing left behind by a failure."""

from __future__ import annotations

import json
import os

from cove.engine import events, hostconfig, state
from cove.engine.container.mounts import container_mounts, drop_volumes, image_volumes
from cove.engine.container.record import Record, check_name, new_record
from cove.engine.container.spec import build_spec
from cove.engine.options import RunOptions
from cove.errors import CoveError


def create(root: str, o: RunOptions) -> Record:
    """Prepare the rootfs, bundle and record of a new container (status `created`)."""
    from cove.engine import images
    from cove.image import snapshots
    from cove.image.store import Store
    paths = state.Paths(root)
    st = Store(root)
    state.reserve(root)  # room for stop/rm -f/exit records when a container fills the disk
    digest = images.find_image(st, o.image)
    img = hostconfig.image_for_platform(st, o.image, digest, o.platform)
    cid = os.urandom(32).hex()
    name = o.name or f"cove-{cid[:12]}"
    # everything that can be checked is, before anything is made
    check_name(name)
    if os.path.lexists(paths.cdir(name)):
        raise CoveError(f"container name {name!r}", "already in use")
    if o.cidfile and os.path.lexists(o.cidfile):
        # docker's check: the file may be another running container's
        raise CoveError(f"--cidfile {o.cidfile}", "container ID file found, make sure the "
                                                  "other container isn't running or "
                                                  "delete it")
    rec = new_record(cid, name, o, digest, [])
    icfg = img.config.config
    rec["Config"]["Labels"] = {**icfg.labels, **rec["Config"]["Labels"]}
    exposed = [p if "/" in p else f"{p}/tcp" for p in icfg.exposed_ports]
    hc = rec["HostConfig"]
    rec["Config"]["ExposedPorts"] = {p: {} for p in dict.fromkeys(
        [*exposed, *hostconfig.parse_expose(o.expose), *hc["PortBindings"]])}
    if o.publish_all and hc["NetworkMode"] not in ("host", "none"):
        # -P: every exposed port not published otherwise, to a free host port (picked
        # at each start, as `-p PORT`); as docker, nothing on host and none
        for p in rec["Config"]["ExposedPorts"]:
            hc["PortBindings"].setdefault(p, [{"HostIp": "", "HostPort": ""}])
    rec["Config"]["Volumes"] = {v: {} for v in icfg.volumes} or None
    if hc["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        network.check_exists(paths, hc["NetworkMode"])
        network.check_ports(paths, hc["PortBindings"])
    rootfs = snapshots.prepare(st, img, name)
    made: list[str] = []
    try:
        anon: list[str] = []
        rec["Mounts"] = container_mounts(paths, o, made, rootfs.path, anon)
        rec["AnonymousVolumes"] = [*anon, *image_volumes(
            paths, rec["Mounts"], img.config.config.volumes, rootfs.path, made)]
        rec["CreatedVolumes"] = made
        spec = build_spec(paths, rec, o, rootfs.path, img.config.config)
        argv = spec["process"]["args"]
        rec["Path"], rec["Args"] = argv[0], argv[1:]
        with open(os.path.join(rootfs.container_dir, "hostname"), "w") as f:
            f.write(rec["Config"]["Hostname"] + "\n")
        if hc["NetworkMode"] in ("host", "none") and hostconfig.own_etc(rec):
            from cove.engine import netcontainer
            netcontainer.write_etc(paths, rec, rootfs.container_dir)
        with open(os.path.join(rootfs.container_dir, "config.json"), "w") as f:
            f.write(json.dumps(spec))  # json.dump encodes in Python, dumps in C
        state.save(rootfs.container_dir, rec)
        if o.cidfile:
            with open(o.cidfile, "x") as f:
                f.write(cid)
    except OSError as e:
        snapshots.release(st, name, remove=True)
        drop_volumes(root, made)
        from cove.errors import os_why
        raise CoveError(f"create {name}", os_why(e)) from None
    except BaseException:
        snapshots.release(st, name, remove=True)
        drop_volumes(root, made)
        raise
    events.emit(root, "container", "create", rec)
    return rec
