"""What `cove ps`, `images`, `volume ls` and `network ls` print: docker's fields (the
names its `--format` templates use: `.ID`, `.Names`, `.RunningFor`, `.Repository`...),
its column headers and default tables, its human status ("Up 3 seconds", "Exited (0)
2 minutes ago") and `ps --filter`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cove.cli.format import Method, ago, ellipsis, human_duration, human_size
from cove.engine.state import parse_rfc3339
from cove.errors import CoveError

# a container's record: a `Record`, or the plain dict of a caller not yet switched to it
R = TypeVar("R", bound=Mapping[str, Any])

PS_HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
              "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Labels": "LABELS",
              "Mounts": "MOUNTS", "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS"}
PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t" \
           "{{.Ports}}\t{{.Names}}"

IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG",
                 "Digest": "DIGEST", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                 "Size": "SIZE", "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE",
                 "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
IMAGE_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"

VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                  "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS",
                  "Size": "SIZE"}
VOLUME_TABLE = "table {{.Driver}}\t{{.Name}}"

NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                   "CreatedAt": "CREATED AT", "Subnet": "SUBNET"}
NETWORK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def _labels(labels: dict[str, str] | None) -> tuple[str, Method]:
    lab = labels or {}
    return (",".join(f"{k}={v}" for k, v in lab.items()),
            Method(lambda k: lab.get(k, ""), "LABEL"))


def created_at(t: float) -> str:
    """Go's time.String() in local time, as docker's `.CreatedAt`."""
    lt = time.localtime(t)
    return time.strftime("%Y-%m-%d %H:%M:%S %z ", lt) + (lt.tm_zone or "UTC")


# -- containers -------------------------------------------------------------------------

def status(rec: Mapping[str, Any]) -> str:
    """docker's human status: `Up 3 seconds (healthy)`, `Exited (0) 2 minutes ago`,
    `Restarting (1) 5 seconds ago`, `Up 1 minute (Paused)`, `Created`; a restart that
    failed adds why (cove's: the record's Error)."""
    st = rec["State"]
    now = time.time()
    s = st.get("Status", "")
    err = str(st.get("Error") or "")
    since = human_duration(now - parse_rfc3339(st.get("StartedAt", "")))
    if s == "running":
        h = (st.get("Health") or {}).get("Status")
        health = f" (health: {h})" if h == "starting" else f" ({h})" if h else ""
        return f"Up {since}{health}"
    if s == "paused":
        return f"Up {since} (Paused)"
    if s == "restarting":
        finished = parse_rfc3339(st.get("FinishedAt", "")) or now
        return f"Restarting ({st.get('ExitCode', 0)}) {human_duration(now - finished)} ago" \
            + (f": {err[:60]}" if err else "")
    if s == "removing":
        return "Removal In Progress"
    if s == "dead":
        return "Dead"
    if s == "created" or not parse_rfc3339(st.get("StartedAt", "")):
        return "Created"
    if s == "exited":
        finished = parse_rfc3339(st.get("FinishedAt", "")) or now
        return f"Exited ({st.get('ExitCode', 0)}) {human_duration(now - finished)} ago" \
            + (f": {err[:60]}" if err else "")
    return str(s).capitalize()


def _ports(rec: Mapping[str, Any]) -> str:
    """`0.0.0.0:8080->80/tcp, 53/udp`: what a running container publishes."""
    if rec["State"].get("Status") not in ("running", "paused"):
        return ""
    ports = rec.get("NetworkSettings", {}).get("Ports") or {}
    out = []
    for cport in sorted(ports, key=lambda p: (p.partition("/")[2],
                                              int(p.partition("/")[0] or 0))):
        binds = ports[cport] or []
        if not binds:
            out.append(cport)
        for b in binds:
            out.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort', '')}->{cport}")
    return ", ".join(out)


def du(path: str) -> int:
    """Bytes in files under `path` (st_blocks: what they take on the disk), without
    following links or crossing into mounts."""
    total = 0
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        return 0
    for dirpath, dirs, files in os.walk(path):
        for n in files:
            try:
                st = os.lstat(os.path.join(dirpath, n))
                total += st.st_blocks * 512 if st.st_nlink == 1 else st.st_size
            except OSError:
                pass
        keep = []
        for d in dirs:
            try:
                if os.lstat(os.path.join(dirpath, d)).st_dev == dev:
                    keep.append(d)
            except OSError:
                pass
        dirs[:] = keep
    return total


def container_size(root: str, rec: Mapping[str, Any]) -> int:
    """What the container wrote: its overlay upper dir (or copied rootfs)."""
    cdir = os.path.join(root, "containers", rec["Name"])
    upper = os.path.join(cdir, "upper")
    return du(upper) if os.path.isdir(upper) else 0


def container_item(root: str, rec: Mapping[str, Any], trunc: bool = True,
                   size: dict[str, int] | None = None) -> dict[str, Any]:
    """`ps`'s fields for one record (`size`: container name -> its image's size, when
    `-s` asks for sizes)."""
    command = " ".join([rec.get("Path", ""), *rec.get("Args", [])]).strip()
    labels, label = _labels((rec.get("Config") or {}).get("Labels"))
    mounts = [m.get("Name") or m.get("Source", "") for m in rec.get("Mounts") or []]
    nets = list((rec.get("NetworkSettings") or {}).get("Networks") or {}) or \
        [rec.get("HostConfig", {}).get("NetworkMode", "")]
    item: dict[str, Any] = {
        "ID": rec["Id"][:12] if trunc else rec["Id"],
        "Image": rec.get("Image", ""),
        "Command": _goquote(ellipsis(command, 20) if trunc else command),
        "CreatedAt": created_at(parse_rfc3339(rec.get("Created", ""))),
        "RunningFor": ago(parse_rfc3339(rec.get("Created", ""))),
        "Ports": _ports(rec),
        "State": rec["State"].get("Status", ""),
        "Status": status(rec),
        "Size": "",
        "Names": rec["Name"],
        "Labels": labels,
        "Label": label,
        "Mounts": ",".join(ellipsis(m, 15) if trunc else m for m in mounts if m),
        "Networks": ",".join(n for n in nets if n),
        "LocalVolumes": str(sum(1 for m in rec.get("Mounts") or []
                                if m.get("Type") == "volume")),
    }
    if size is not None:
        rw = container_size(root, rec)
        virtual = rw + size.get(rec["Name"], 0)
        item["Size"] = f"{human_size(rw, 3)} (virtual {human_size(virtual, 3)})"
    return item


def _goquote(s: str) -> str:
    """Go's strconv.Quote, as docker quotes `.Command`."""
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7f:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out) + '"'


STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")
PS_FILTERS = ("id", "name", "status", "label", "ancestor", "exited", "health", "before",
              "since", "network", "volume")


def parse_filters(specs: list[str], known: tuple[str, ...]) -> dict[str, list[str]]:
    """`--filter key=value` flags: values of one key are alternatives (any may match),
    different keys must all match, as docker's."""
    out: dict[str, list[str]] = {}
    for f in specs:
        k, eq, v = f.partition("=")
        k = k.strip().lower()
        if not eq:
            raise CoveError(f"--filter {f}", "bad format of filter (expected name=value)")
        if k not in known:
            raise CoveError(f"--filter {f}", f"invalid filter '{k}'")
        out.setdefault(k, []).append(v)
    for v in out.get("status", []):
        if v not in STATUSES:
            raise CoveError(f"--filter status={v}",
                            f"invalid filter value (expected {', '.join(STATUSES)})")
    for v in out.get("health", []):
        if v not in HEALTH:
            raise CoveError(f"--filter health={v}",
                            f"invalid filter value (expected {', '.join(HEALTH)})")
    for v in out.get("exited", []):
        if not (v.lstrip("-").isascii() and v.lstrip("-").isdigit()):
            raise CoveError(f"--filter exited={v}", "expected an exit code (an integer)")
    return out


def _name_match(pattern: str, name: str) -> bool:
    """docker matches names as an unanchored regular expression."""
    import re
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _label_match(want: str, labels: dict[str, str]) -> bool:
    k, eq, v = want.partition("=")
    return k in labels and (not eq or labels[k] == v)


def filter_containers(root: str, recs: list[R], f: dict[str, list[str]]) -> list[R]:
    """Keep the records every filter key matches (any of its values)."""
    if not f:
        return recs
    digests: set[str] = set()
    if "ancestor" in f:
        from cove.image.store import Store
        st = Store(root, create=False)
        for ref in f["ancestor"]:
            try:
                digests.add(st.resolve(ref))
            except CoveError:
                pass
    created = {r["Name"]: parse_rfc3339(r.get("Created", "")) for r in recs}

    def when(ref: str) -> float:
        for r in recs:
            if ref in (r["Name"], r["Id"]) or r["Id"].startswith(ref):
                return created[r["Name"]]
        raise CoveError(f"container {ref}", "no such container")
    before = [when(x) for x in f.get("before", [])]
    since = [when(x) for x in f.get("since", [])]

    def keep(r: Mapping[str, Any]) -> bool:
        st = r["State"]
        labels = (r.get("Config") or {}).get("Labels") or {}
        health = (st.get("Health") or {}).get("Status") or "none"
        checks: dict[str, Callable[[str], bool]] = {
            "id": lambda v: r["Id"].startswith(v),
            "name": lambda v: _name_match(v, r["Name"]),
            "status": lambda v: st.get("Status") == v,
            "label": lambda v: _label_match(v, labels),
            "ancestor": lambda v: r.get("Image") == v or r.get("ImageDigest") in digests,
            "exited": lambda v: st.get("Status") == "exited"
            and int(st.get("ExitCode", 0)) == int(v),
            "health": lambda v: health == v,
            "network": lambda v: v in ((r.get("NetworkSettings") or {}).get("Networks")
                                       or {}) or r["HostConfig"].get("NetworkMode") == v,
            "volume": lambda v: any(v in (m.get("Name"), m.get("Source"),
                                          m.get("Destination"))
                                    for m in r.get("Mounts") or []),
        }
        for key, vals in f.items():
            if key in ("before", "since"):
                continue
            if not any(checks[key](v) for v in vals):
                return False
        t = created[r["Name"]]
        return all(t < b for b in before) and all(t > s for s in since)
    return [r for r in recs if keep(r)]


# -- images, volumes, networks ----------------------------------------------------------

def image_items(row: dict[str, Any], trunc: bool = True) -> list[dict[str, Any]]:
    """`images`'s fields: one item per name of an image (`<none>` without)."""
    out = []
    digest = row["Digest"]
    for n in row["Names"] or ["<none>:<none>"]:
        if "@" in n:
            repo, tag = n.partition("@")[0], "<none>"
        else:
            repo, _, tag = n.rpartition(":")
            if not repo or "/" in tag:
                repo, tag = n, "latest"
        image_id = row.get("ImageId") or digest  # the config's digest, as docker's
        out.append({
            "ID": image_id.partition(":")[2][:12] if trunc else image_id,
            "Repository": repo, "Tag": tag, "Digest": digest,
            "CreatedSince": ago(row["CreatedAt"]), "CreatedAt": created_at(row["CreatedAt"]),
            "Size": human_size(row["Size"], 3), "VirtualSize": human_size(row["Size"], 3),
            "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A"})
    return out


def volume_item(v: dict[str, Any]) -> dict[str, Any]:
    labels, label = _labels(v.get("Labels"))
    return {"Name": v["Name"], "Driver": v.get("Driver", "local"),
            "Scope": v.get("Scope", "local"), "Mountpoint": v.get("Mountpoint", ""),
            "Labels": labels, "Label": label, "Links": "N/A", "Size": "N/A"}


def network_item(n: dict[str, Any], trunc: bool = True) -> dict[str, Any]:
    labels, label = _labels(n.get("Labels"))
    return {"ID": n["Id"][:12] if trunc else n["Id"], "Name": n["Name"],
            "Driver": n.get("Driver", "bridge"), "Scope": "local", "IPv6": "false",
            "Internal": "false", "Labels": labels, "Label": label,
            "CreatedAt": created_at(parse_rfc3339(n.get("Created", ""))),
            "Subnet": n.get("Subnet", "")}
