"""`cove pull/push/images/rmi/tag/inspect/image prune/save/load/import`."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from cove.cli.common import registry_flags, registry_options
from cove.errors import CoveError
from cove.image import progress, reference
from cove.image.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry client costs `cove ps` and `cove run` 0.1 s to import
    from cove.image.transfer import RegistryOptions


def _store(a: argparse.Namespace) -> Store:
    return Store(a.root)


def _opts(a: argparse.Namespace) -> RegistryOptions:
    from cove.image.transfer import RegistryOptions
    o = registry_options(a)
    assert isinstance(o, RegistryOptions)
    return o


def cmd_pull(a: argparse.Namespace) -> int:
    from cove.image.transfer import pull
    from cove.oci.image import Platform
    plat = Platform.from_string(a.platform) if a.platform else None
    digest = pull(_store(a), a.image, platform=plat, opts=_opts(a),
                  progress=progress.choose(a.quiet))
    print(digest)
    return 0


def cmd_push(a: argparse.Namespace) -> int:
    from cove.image.transfer import push
    digest = push(_store(a), a.image, a.dest, opts=_opts(a),
                  progress=progress.choose(a.quiet))
    print(digest)
    return 0


def _ago(t: float) -> str:
    s = max(0, int(time.time() - t))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} seconds ago"


def _rows(st: Store) -> list[dict[str, Any]]:
    rows = []
    for rec in sorted(st.records(), key=lambda r: -r.created):
        try:
            img = st.image(rec.digest)
            size: int | None = img.size
            created = img.config.created
        except CoveError:
            size, created = None, ""
        rows.append({"Id": rec.digest.partition(":")[2][:12], "Digest": rec.digest,
                     "Names": rec.names, "Created": created or datetime.datetime.fromtimestamp(
                         rec.created, datetime.UTC).isoformat(),
                     "CreatedAt": rec.created, "Size": size})
    return rows


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    f = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if f < 1000:
            return f"{f:.3g} {unit}"
        f /= 1000
    return f"{f:.3g} TB"


def cmd_images(a: argparse.Namespace) -> int:
    rows = _rows(_store(a))
    if a.quiet:
        for r in rows:
            print(r["Id"])
        return 0
    if a.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for r in rows:
        names = r["Names"] or ["<none>:<none>"]
        for n in names:
            if "@" in n:
                repo, tag = n.partition("@")[0], "<none>"
            else:
                repo, _, tag = n.rpartition(":")
            table.append((repo, tag, r["Id"], _ago(r["CreatedAt"]), _human(r["Size"])))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
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
                print(f"Untagged: {full}")
                continue
            users = _in_use(st).get(digest)
            if users and not a.force:
                raise CoveError(f"image {ref}", f"in use by container {users[0]} "
                                                "(remove it, or use --force)")
            for n in names:
                print(f"Untagged: {n}")
            st.remove_image(digest)
            print(f"Deleted: {digest}")
        except CoveError as e:
            print(f"cove: {e}", file=sys.stderr)
            rc = 1
    st.gc()
    return rc


def cmd_tag(a: argparse.Namespace) -> int:
    _store(a).tag(a.source, a.target)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from cove.engine import containers
    st = _store(a)
    out = []
    for ref in a.images:
        if a.type != "image":
            try:
                out.append(containers.inspect(st.root, ref))
                continue
            except CoveError:
                if a.type == "container":
                    raise
        img = st.image(ref)
        out.append({"Id": img.digest, "Digest": img.digest, "RepoTags": img.names,
                    "Created": img.config.created, "Architecture": img.config.architecture,
                    "Os": img.config.os, "Variant": img.config.variant or None,
                    "Config": img.config.config.to_json(),
                    "RootFS": {"Type": "layers", "Layers": img.config.diff_ids},
                    "Size": img.size, "Manifest": img.manifest.to_json(),
                    "ConfigDigest": img.manifest.config.digest,
                    "History": img.config.history})
    print(json.dumps(out, indent=2))
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    st = _store(a)
    used = _in_use(st)
    for rec in st.records():
        if (not rec.names or a.all) and rec.digest not in used:
            st.remove_image(rec.digest)
            print(f"Deleted: {rec.digest}")
    blobs, snaps = st.gc()
    print(f"Reclaimed {len(blobs)} blobs, {len(snaps)} layer snapshots")
    return 0


def cmd_save(a: argparse.Namespace) -> int:
    from cove.image.transfer import save
    if not a.output:
        raise CoveError("save", "give -o FILE")
    save(_store(a), a.images, a.output, a.format)
    return 0


def cmd_load(a: argparse.Namespace) -> int:
    from cove.image.transfer import load
    for n in load(_store(a), a.input, a.name):
        print(f"Loaded image: {n}")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    from cove.image.transfer import import_rootfs
    from cove.oci.image import ContainerConfig
    cfg = ContainerConfig(
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        cmd=a.cmd.split() if a.cmd else None)
    print(import_rootfs(_store(a), a.tarball, a.name, compression=a.compression, config=cfg))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry")
    registry_flags(p)
    p.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    p.add_argument("image")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="push an image to a registry")
    registry_flags(p)
    p.add_argument("image")
    p.add_argument("dest", nargs="?", help="REGISTRY/REPO[:TAG] (default: the image's name)")
    p.set_defaults(func=cmd_push)

    for name in ("images",):
        p = sub.add_parser(name, help="list images")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("-q", "--quiet", action="store_true", help="ids only")
        p.set_defaults(func=cmd_images)

    p = sub.add_parser("rmi", help="remove images (or names)")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_rmi)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("inspect", help="a container's or an image's details as JSON")
    p.add_argument("--type", choices=["container", "image"], help="only this kind")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_inspect)

    img = sub.add_parser("image", help="manage images")
    isub = img.add_subparsers(dest="image_cmd", required=True)
    p = isub.add_parser("prune", help="remove dangling images and unreferenced blobs")
    p.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    p.set_defaults(func=cmd_prune)
    p = isub.add_parser("ls", help="list images")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("save", help="write images to a docker-archive or oci-archive")
    p.add_argument("-o", "--output")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"),
                   default="docker-archive")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("load", help="load images from a docker-archive or oci-archive")
    p.add_argument("-i", "--input", required=True)
    p.add_argument("name", nargs="?", help="name the loaded image")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("import", help="an image from a rootfs tarball")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument("--cmd", help="the image's Cmd (split on spaces)")
    p.add_argument("tarball")
    p.add_argument("name")
    p.set_defaults(func=cmd_import)
