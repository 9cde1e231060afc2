"""`cove pull/push/images/rmi/tag/inspect/image prune/save/load/import`."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from cove.cli.common import registry_flags, registry_options
from cove.engine import events
from cove.errors import CoveError
from cove.image import progress, reference
from cove.image.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry client costs `cove ps` and `cove run` 0.1 s to import
    from cove.image.transfer import RegistryOptions


def _store(a: argparse.Namespace) -> Store:
    return Store(a.root)


def _opts(a: argparse.Namespace) -> RegistryOptions:
    return registry_options(a)


def cmd_pull(a: argparse.Namespace) -> int:
    from cove.image.transfer import pull
    from cove.oci.image import Platform
    plat = Platform.from_string(a.platform) if a.platform else None
    digest = pull(_store(a), a.image, platform=plat, opts=_opts(a),
                  progress=progress.choose(a.quiet))
    events.emit(_store(a).root, "image", "pull", a.image, name=a.image)
    print(digest)
    return 0


def cmd_push(a: argparse.Namespace) -> int:
    from cove.image.transfer import push
    digest = push(_store(a), a.image, a.dest, opts=_opts(a),
                  progress=progress.choose(a.quiet))
    print(digest)
    return 0


def _rows(st: Store) -> list[dict[str, Any]]:
    rows = []
    for rec in sorted(st.records(), key=lambda r: -r.created):
        image_id = rec.digest  # docker's IMAGE ID is the config's digest (below)
        try:
            img = st.image(rec.digest)
            size: int | None = img.size
            created = img.config.created
            image_id = img.manifest.config.digest
        except CoveError:
            size, created = None, ""
        rows.append({"Id": image_id.partition(":")[2][:12], "ImageId": image_id,
                     "Digest": rec.digest,
                     "Names": rec.names, "Created": created or datetime.datetime.fromtimestamp(
                         rec.created, datetime.UTC).isoformat(),
                     "CreatedAt": rec.created, "Size": size})
    return rows


def cmd_images(a: argparse.Namespace) -> int:
    """docker's `images`: its table, `-q` ids, or a `--format` template over its fields
    (`.Repository`, `.Tag`, `.ID`...); `--format json` is cove's JSON array."""
    rows = _rows(Store(a.root, create=False))
    if a.quiet:
        for r in rows:
            print(r["ImageId"] if a.no_trunc else r["Id"])
        return 0
    if a.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    from cove.cli import listing
    from cove.cli.format import render_list
    items = [it for r in rows for it in listing.image_items(r, not a.no_trunc)]
    render_list(a.format or "", items, listing.IMAGE_TABLE, listing.IMAGE_HEADERS)
    return 0


def _in_use(st: Store) -> dict[str, list[str]]:
    import os
    used: dict[str, list[str]] = {}
    for cid in os.listdir(st.container_dir):
        try:
            with open(os.path.join(st.container_dir, cid, "rootfs.json")) as f:
                used.setdefault(json.load(f).get("image", ""), []).append(cid)
        except (OSError, ValueError):
            pass
    return used


def cmd_rmi(a: argparse.Namespace) -> int:
    st = _store(a)
    rc = 0
    for ref in a.images:
        try:
            digest = st.resolve(ref)
            idx = st.index()["images"]
            names = idx.get(digest, {}).get("names", [])
            full = None
            try:
                full = next((c for c in reference.local_candidates(
                    ref, reference.search_registries(st.root)) if c in names), None)
            except CoveError:
                pass
            if full and len(names) > 1 and not a.force:
                st.untag(full)
                events.emit(st.root, "image", "untag", digest, name=full)
                print(f"Untagged: {full}")
                continue
            users = _in_use(st).get(digest)
            if users and not a.force:
                raise CoveError(f"image {ref}", f"in use by container {users[0]} "
                                                "(remove it, or use --force)")
            for n in names:
                print(f"Untagged: {n}")
            st.remove_image(digest)
            events.emit(st.root, "image", "delete", digest, name=ref)
            print(f"Deleted: {digest}")
        except CoveError as e:
            print(f"cove: {e}", file=sys.stderr)
            rc = 1
    st.gc()
    return rc


def cmd_tag(a: argparse.Namespace) -> int:
    st = _store(a)
    st.tag(a.source, a.target)
    events.emit(st.root, "image", "tag", st.resolve(a.target), name=a.target)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    """docker's `inspect`: each object as JSON (a list), or `-f TEMPLATE` once per
    object; a name is looked up as a container, an image, a volume, then a network."""
    st = _store(a)
    out = [_inspect_one(st, ref, a.type) for ref in a.images]
    if a.format:
        from cove.cli.format import render_each
        render_each(a.format, out)
    else:
        print(json.dumps(out, indent=2))
    return 0


def _inspect_one(st: Store, ref: str, kind: str | None) -> dict[str, Any]:
    from cove.engine import containers
    if kind in (None, "container"):
        try:
            return dict(containers.inspect_record(
                st.root, ref, notify=lambda m: print(f"cove: {m}", file=sys.stderr)))
        except CoveError as e:
            if kind == "container" or e.why != "no such container":
                raise
    if kind in (None, "image"):
        try:
            return _image_json(st, st.resolve(ref))
        except CoveError:
            if kind == "image":
                raise
    if kind in (None, "volume"):
        from cove.engine import volumes
        try:
            return volumes.inspect(st.root, ref)
        except CoveError:
            if kind == "volume":
                raise
    if kind in (None, "network"):
        from cove.engine import network
        try:
            return network.inspect(st.root, ref)
        except CoveError:
            if kind == "network":
                raise
    # none of them: say so, as docker, rather than report only the last lookup's
    # failure for what was likely a container's name
    raise CoveError("no such object", ref)


def _image_json(st: Store, digest: str) -> dict[str, Any]:
    img = st.image(digest)
    # docker's Id is the config's digest (what `images` shows as IMAGE ID, the same
    # wherever the image is saved, loaded or pushed); the manifest's is Digest
    return {"Id": img.manifest.config.digest, "Digest": img.digest, "RepoTags": img.names,
            "RepoDigests": [f"{n.rsplit(':', 1)[0]}@{img.digest}" for n in img.names
                            if "/" in n],
            "Created": img.config.created, "Architecture": img.config.architecture,
            "Os": img.config.os, "Variant": img.config.variant or None,
            "Config": img.config.config.to_json(),
            "RootFS": {"Type": "layers", "Layers": img.config.diff_ids},
            "Size": img.size, "Manifest": img.manifest.to_json(),
            "ConfigDigest": img.manifest.config.digest,
            "History": img.config.history}


def cmd_prune(a: argparse.Namespace) -> int:
    st = _store(a)
    used = _in_use(st)
    for rec in st.records():
        if (not rec.names or a.all) and rec.digest not in used:
            st.remove_image(rec.digest)
            events.emit(st.root, "image", "delete", rec.digest)
            print(f"Deleted: {rec.digest}")
    blobs, snaps = st.gc()
    print(f"Reclaimed {len(blobs)} blobs, {len(snaps)} layer snapshots")
    return 0


def cmd_save(a: argparse.Namespace) -> int:
    """To -o FILE, or to stdout (docker's): a tar on a terminal helps nobody."""
    from cove.image.archive import save
    if a.output:
        save(_store(a), a.images, a.output, a.format)
        return 0
    if sys.stdout.isatty():
        raise CoveError("save", "cowardly refusing to save to a terminal. Use the -o flag "
                                "or redirect")
    sys.stdout.flush()
    out = sys.stdout.buffer
    save(_store(a), a.images, out, a.format)
    out.flush()
    return 0


def cmd_load(a: argparse.Namespace) -> int:
    """From -i FILE, or from stdin (docker's). An image without a name is reported by
    its IMAGE ID (its config's digest), as docker's `Loaded image ID:`."""
    from cove.image.archive import load
    st = _store(a)
    if a.input:
        loaded = load(st, a.input, a.name)
    elif sys.stdin.isatty():
        raise CoveError("load", "requested load from stdin, but stdin is empty")
    else:
        loaded = load(st, sys.stdin.buffer, a.name)
    for n in loaded:
        if n.startswith("sha256:"):
            print(f"Loaded image ID: {st.config_digest(n) or n}")
        else:
            print(f"Loaded image: {n}")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    """A progress bar on a terminal (a large tarball takes a while), nothing otherwise:
    stdout is the digest, for scripts."""
    from cove.image.assemble import import_rootfs
    from cove.oci.image import ContainerConfig
    cfg = ContainerConfig(
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        cmd=a.cmd.split() if a.cmd else None)
    prog = progress.choose(quiet=a.quiet or not sys.stderr.isatty())
    print(import_rootfs(_store(a), a.tarball, a.name, compression=a.compression, config=cfg,
                        progress=prog))
    return 0


def _images_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="",
                   help="table, json, 'table TEMPLATE' or a Go TEMPLATE "
                        "(e.g. '{{.Repository}}:{{.Tag}}')")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-a", "--all", action="store_true", help="(accepted: every image shows)")
    p.set_defaults(func=cmd_images)


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry")
    registry_flags(p)
    p.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    p.add_argument("image", help="NAME[:TAG|@DIGEST] (docker.io/library/ when short)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="push an image to a registry")
    registry_flags(p)
    p.add_argument("image", help="the local image to push")
    p.add_argument("dest", nargs="?", help="REGISTRY/REPO[:TAG] (default: the image's name)")
    p.set_defaults(func=cmd_push)

    for name in ("images",):
        p = sub.add_parser(name, help="list images")
        _images_flags(p)

    p = sub.add_parser("rmi", help="remove images (or names)")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images: names or IDs")
    p.set_defaults(func=cmd_rmi)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", help="SOURCE_IMAGE[:TAG] (a name or an ID)")
    p.add_argument("target", help="TARGET_IMAGE[:TAG]: the new name")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("inspect", help="a container's, image's, volume's or network's "
                                        "details as JSON")
    p.add_argument("--type", choices=["container", "image", "volume", "network"],
                   help="only this kind")
    p.add_argument("-f", "--format", help="a Go template, once per object "
                                          "(e.g. '{{.State.Status}}', '{{json .Config}}')")
    p.add_argument("-s", "--size", action="store_true", help="(accepted: sizes are shown)")
    p.add_argument("images", nargs="+", metavar="NAME",
                   help="containers, images, volumes or networks (names or IDs)")
    p.set_defaults(func=cmd_inspect)

    img = sub.add_parser("image", help="manage images")
    isub = img.add_subparsers(dest="image_cmd", required=True)
    p = isub.add_parser("prune", help="remove dangling images and unreferenced blobs")
    p.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    p.set_defaults(func=cmd_prune)
    p = isub.add_parser("ls", help="list images")
    _images_flags(p)

    p = sub.add_parser("save", help="write images to a docker-archive or oci-archive")
    p.add_argument("-o", "--output", help="the archive (default: stdout)")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"),
                   default="docker-archive")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images to write")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("load", help="load images from a docker-archive or oci-archive")
    p.add_argument("-i", "--input", help="the archive (default: stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="(no progress is shown)")
    p.add_argument("name", nargs="?", help="name the loaded image")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("import", help="an image from a rootfs tarball")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument("--cmd", help="the image's Cmd (split on spaces)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on a terminal")
    p.add_argument("tarball", help="a rootfs tar (gzip, zstd or plain)")
    p.add_argument("name", help="the new image's name")
    p.set_defaults(func=cmd_import)
