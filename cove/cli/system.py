"""`cove version`, `info`, `system df` and `system prune` (`events`: cove/cli/events.py):
docker's system commands, laid out as docker lays them out (scripts grep them) and
formattable with the same `--format` templates (`{{.Client.Version}}`,
`{{.ContainersRunning}}`...)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from cove.engine.units import host_memory
from cove.errors import CoveError

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def _root(a: argparse.Namespace) -> str:
    """The state root's path; nothing made (these commands only read, except prune)."""
    from cove.image.store import Store
    return Store(a.root, create=False).root


def _commit() -> str:
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "_commit")) as f:
            return f.read().strip()[:7] or "unknown"
    except OSError:
        return "unknown"


def _show(fmt: str | None, data: dict[str, Any], text: str) -> None:
    if fmt:
        from cove.cli.format import render_each
        render_each(fmt, [data])
    else:
        sys.stdout.write(text)


# -- version ----------------------------------------------------------------------------

def version_line() -> str:
    """`cove --version`, as docker's: `Cove version 0.1.0, build 1973264`."""
    from cove import __version__
    return f"Cove version {__version__}, build {_commit()}"


def versions() -> dict[str, Any]:
    """docker's `version` document: Client and Server (the engine runs in the command
    itself: no daemon, no API), the runtime as a server component."""
    from cove import __version__
    from cove.oci import OCI_VERSION
    py = platform.python_version()
    arch = _GOARCH.get(platform.machine(), platform.machine())
    common = {"Version": __version__, "PythonVersion": py, "GitCommit": _commit(),
              "Os": "linux", "Arch": arch}
    try:
        from cove.runtime.features import libseccomp_version
        seccomp = libseccomp_version() or "none"
    except (OSError, ImportError):
        seccomp = "none"
    return {
        "Client": {"Platform": {"Name": "Cove"}, **common, "Context": "default"},
        "Server": {"Platform": {"Name": "Cove Engine"}, **common,
                   "KernelVersion": platform.release(),
                   "Components": [
                       {"Name": "Engine", "Version": __version__,
                        "Details": {**common, "KernelVersion": platform.release()}},
                       {"Name": "cove-runtime", "Version": __version__,
                        "Details": {"GitCommit": _commit(), "Spec": OCI_VERSION,
                                    "Libseccomp": seccomp}}]},
    }


def cmd_version(a: argparse.Namespace) -> int:
    v = versions()
    c, s = v["Client"], v["Server"]

    def row(indent: int, label: str, value: object) -> str:
        return f"{' ' * indent}{label + ':':<{20 - indent}}{value}\n"
    text = (f"Client: {c['Platform']['Name']}\n" + row(1, "Version", c["Version"])
            + row(1, "Python version", c["PythonVersion"]) + row(1, "Git commit", c["GitCommit"])
            + row(1, "OS/Arch", f"{c['Os']}/{c['Arch']}") + row(1, "Context", c["Context"])
            + f"\nServer: {s['Platform']['Name']}\n")
    for comp in s["Components"]:
        d = comp["Details"]
        text += f" {comp['Name']}:\n" + row(2, "Version", comp["Version"])
        if "PythonVersion" in d:
            text += (row(2, "Python version", d["PythonVersion"])
                     + row(2, "Git commit", d["GitCommit"])
                     + row(2, "OS/Arch", f"{d['Os']}/{d['Arch']}")
                     + row(2, "Kernel", d["KernelVersion"]))
        else:
            text += (row(2, "GitCommit", d["GitCommit"]) + row(2, "OCI spec", d["Spec"])
                     + row(2, "libseccomp", d["Libseccomp"]))
    _show(a.format, v, text)
    return 0


# -- info -------------------------------------------------------------------------------

def _backing_fs(path: str) -> str:
    """The filesystem type under `path` (its nearest existing parent), as docker names
    it (ext4 -> extfs)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mp = left.split()[4]
                if (p == mp or p.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, fstype = mp, right.split()[0]
    except OSError:
        pass
    return "extfs" if fstype in ("ext2", "ext3", "ext4") else fstype


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "Linux"





def bytes_size(n: float) -> str:
    """go-units' BytesSize: binary units, 4 significant digits ("3.824GiB")."""
    f = float(n)
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while f >= 1024 and i < len(units) - 1:
        f /= 1024
        i += 1
    return f"{f:.4g}{units[i]}"


def _cgroup() -> tuple[str, str]:
    """(version, driver): the engine drives cove-runtime with cgroupfs paths."""
    try:
        from cove.runtime.cgroups.detect import detect_layout
        layout = detect_layout()
    except (CoveError, OSError):
        return "", "none"
    return ("2" if layout == "v2" else "1"), "cgroupfs"


def info(root: str) -> dict[str, Any]:
    """docker's `info` document (its field names), for this state root."""
    from cove import __version__
    from cove.engine import state
    paths = state.Paths(root)
    counts = {"running": 0, "paused": 0, "stopped": 0}
    names = state.all_names(paths)
    for n in names:
        rec: Mapping[str, Any] = state.load_record(paths.cdir(n)) or {}
        st = (rec.get("State") or {}).get("Status", "")
        counts["running" if st in ("running", "restarting") else
               "paused" if st == "paused" else "stopped"] += 1
    images = 0
    try:
        from cove.image.store import Store
        images = len(Store(root, create=False).records())
    except (CoveError, OSError, ValueError):
        pass
    cg_version, cg_driver = _cgroup()
    from cove.engine.containers import runtime_binary
    rt = runtime_binary()
    rts = {"cove-runtime": {"path": rt}}
    for extra in ("cove-runtime-gvisor", "cove-runtime-vm"):
        cand = os.path.join(os.path.dirname(rt), extra)
        if os.path.exists(cand):
            rts[extra] = {"path": cand}
    return {
        "ID": "", "Containers": len(names), "ContainersRunning": counts["running"],
        "ContainersPaused": counts["paused"], "ContainersStopped": counts["stopped"],
        "Images": images, "Driver": "overlay",
        "DriverStatus": [["Backing Filesystem", _backing_fs(root)]],
        "LoggingDriver": "json-file", "CgroupDriver": cg_driver, "CgroupVersion": cg_version,
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
        "OSType": "linux", "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 0, "MemTotal": host_memory(),
        "DockerRootDir": root, "CoveRootDir": root, "Name": platform.node(),
        "ServerVersion": __version__, "Runtimes": rts, "DefaultRuntime": "cove-runtime",
        "SecurityOptions": ["name=seccomp,profile=builtin"]
        + (["name=rootless"] if os.geteuid() != 0 else []),
        "Debug": False,
        "ClientInfo": {"Version": __version__, "Context": "default", "Debug": False},
    }


def cmd_info(a: argparse.Namespace) -> int:
    i = info(_root(a))
    text = (f"Client:\n Version:    {i['ClientInfo']['Version']}\n Context:    default\n"
            f" Debug Mode: false\n\nServer:\n"
            f" Containers: {i['Containers']}\n  Running: {i['ContainersRunning']}\n"
            f"  Paused: {i['ContainersPaused']}\n  Stopped: {i['ContainersStopped']}\n"
            f" Images: {i['Images']}\n Server Version: {i['ServerVersion']}\n"
            f" Storage Driver: {i['Driver']}\n"
            + "".join(f"  {k}: {v}\n" for k, v in i["DriverStatus"])
            + f" Logging Driver: {i['LoggingDriver']}\n Cgroup Driver: {i['CgroupDriver']}\n"
            f" Cgroup Version: {i['CgroupVersion']}\n"
            f" Runtimes: {' '.join(i['Runtimes'])}\n Default Runtime: {i['DefaultRuntime']}\n"
            " Security Options:\n"
            + "".join(f"  {o.split(',')[0].partition('=')[2]}\n"
                      + "".join(f"   {kv.partition('=')[0].capitalize()}: "
                                f"{kv.partition('=')[2]}\n" for kv in o.split(",")[1:])
                      for o in i["SecurityOptions"])
            + f" Kernel Version: {i['KernelVersion']}\n"
            f" Operating System: {i['OperatingSystem']}\n OSType: {i['OSType']}\n"
            f" Architecture: {i['Architecture']}\n CPUs: {i['NCPU']}\n"
            f" Total Memory: {bytes_size(i['MemTotal'])}\n Name: {i['Name']}\n"
            f" Cove Root Dir: {i['DockerRootDir']}\n Debug Mode: false\n")
    _show(a.format, i, text)
    return 0


# -- system df / prune ------------------------------------------------------------------

def _usage(root: str) -> dict[str, Any]:
    """What `system df` counts: images (in use by a container: active), containers
    (running: active; their writable layers), volumes (used by a container: active)."""
    from cove.cli.images import _in_use
    from cove.cli.listing import container_size, du
    from cove.engine import state, volumes
    from cove.image.store import Store
    paths = state.Paths(root)
    recs = [r for r in (state.load_record(paths.cdir(n)) for n in state.all_names(paths)) if r]
    out: dict[str, Any] = {"images": [], "containers": [], "volumes": []}
    if os.path.isdir(os.path.join(root, "blobs")):
        st = Store(root, create=False)
        used = _in_use(st)
        for rec in st.records():
            try:
                size = int(st.image(rec.digest).size or 0)
            except (CoveError, OSError, ValueError):
                size = 0
            out["images"].append((rec.digest, size, rec.digest in used))
    for r in recs:
        running = r["State"].get("Status") in ("running", "restarting", "paused")
        out["containers"].append((r["Name"], container_size(root, r), running))
    used_vols = {m.get("Name") for r in recs for m in r.get("Mounts") or []
                 if m.get("Type") == "volume"}
    for v in volumes.ls(root):
        out["volumes"].append((v["Name"], du(v["Mountpoint"]), v["Name"] in used_vols))
    return out


def cmd_df(a: argparse.Namespace) -> int:
    from cove.cli.format import human_size, render_list
    u = _usage(_root(a))

    def row(kind: str, items: list[tuple[str, int, bool]]) -> dict[str, Any]:
        total = sum(s for _, s, _ in items)
        free = sum(s for _, s, active in items if not active)
        pct = f" ({int(100 * free / total)}%)" if total else ""
        return {"Type": kind, "TotalCount": str(len(items)),
                "Active": str(sum(1 for *_, active in items if active)),
                "Size": human_size(total), "Reclaimable": human_size(free) + pct}
    rows = [row("Images", u["images"]), row("Containers", u["containers"]),
            row("Local Volumes", u["volumes"]),
            {"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B",
             "Reclaimable": "0B"}]
    render_list(a.format or "", rows,
                "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                 "Reclaimable": "RECLAIMABLE"})
    return 0


def _confirm(a: argparse.Namespace) -> None:
    lines = ["WARNING! This will remove:", "  - all stopped containers",
             "  - all networks not used by at least one container"]
    if a.volumes:
        lines.append("  - all anonymous volumes not used by at least one container"
                     if not a.all else "  - all volumes not used by at least one container")
    lines.append("  - all images without at least one container associated to them"
                 if a.all else "  - all dangling images")
    lines.append("  - unused build cache")
    sys.stdout.write("\n".join(lines) + "\n\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CoveError("system prune", "cancelled")


def cmd_prune(a: argparse.Namespace) -> int:
    """docker's `system prune`: stopped containers, unused networks (not the default
    bridge), with --volumes unused anonymous volumes (all unused with -a), dangling
    images (all unused with -a), then the blobs and layers nothing references."""
    if not a.force:
        _confirm(a)
    from cove.cli.images import _in_use
    from cove.cli.listing import container_size, du
    from cove.engine import containers, events, network, state, volumes
    root = _root(a)
    paths = state.Paths(root)
    reclaimed = 0
    gone: list[str] = []
    for n in state.all_names(paths):
        rec = state.load_record(paths.cdir(n))
        if not rec or rec["State"].get("Status") in ("running", "restarting", "paused"):
            continue
        size = container_size(root, rec)
        try:
            containers.remove(root, n)
        except CoveError as e:
            print(f"cove: {e}", file=sys.stderr)
            continue
        reclaimed += size
        gone.append(rec["Id"])
    _section("Deleted Containers", gone)
    gone = []
    for net in network.ls(root):
        if net["Name"] != "bridge" and not net.get("Containers"):
            try:
                gone.append(network.remove(root, net["Name"]))
            except CoveError as e:
                print(f"cove: {e}", file=sys.stderr)
    _section("Deleted Networks", gone)
    if a.volumes:
        gone = []
        for v in volumes.ls(root):
            if not a.all and (v.get("Labels") or {}).get("cove.anonymous") != "true":
                continue
            if volumes.users(root, v["Name"]):
                continue
            size = du(v["Mountpoint"])
            try:
                gone.append(volumes.remove(root, v["Name"]))
                reclaimed += size
            except CoveError as e:
                print(f"cove: {e}", file=sys.stderr)
        _section("Deleted Volumes", gone)
    lines: list[str] = []
    if os.path.isdir(os.path.join(root, "blobs")):
        from cove.image.store import Store
        st = Store(root)
        before = du(st.blob_dir) + du(st.snapshot_dir)
        used = _in_use(st)
        for img in st.records():
            if (img.names and not a.all) or img.digest in used:
                continue
            lines += [f"untagged: {n}" for n in img.names]
            st.remove_image(img.digest)
            events.emit(root, "image", "delete", img.digest)
            lines.append(f"deleted: {img.digest}")
        st.gc()
        reclaimed += max(0, before - du(st.blob_dir) - du(st.snapshot_dir))
    _section("Deleted Images", lines)
    from cove.cli.format import human_size
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


def _section(title: str, lines: list[str]) -> None:
    if lines:
        print(f"{title}:\n" + "\n".join(lines) + "\n")


# -- the parsers ------------------------------------------------------------------------

def register(sub: Any) -> None:
    """Add `version`, `info`, `system` and `events` to `cove`'s sub-parsers."""
    p = sub.add_parser("version", help="show the Cove version information")
    p.add_argument("-f", "--format", help="a Go template (e.g. '{{.Client.Version}}', "
                                          "'{{json .}}')")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", help="a Go template (e.g. '{{.ContainersRunning}}', "
                                          "'{{json .}}')")
    p.set_defaults(func=cmd_info)
    from cove.cli import events
    events.flags(sub.add_parser("events", help="get real time events from the engine"))

    s = sub.add_parser("system", help="manage Cove")
    ss = s.add_subparsers(dest="system_cmd", required=True, metavar="COMMAND")
    p = ss.add_parser("df", help="show disk usage")
    p.add_argument("--format", help="table, json, or a Go template over .Type, "
                                    ".TotalCount, .Active, .Size, .Reclaimable")
    p.set_defaults(func=cmd_df)
    p = ss.add_parser("prune", help="remove unused data")
    p.add_argument("-a", "--all", action="store_true",
                   help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="prune anonymous volumes")
    p.set_defaults(func=cmd_prune)
    p = ss.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", help="a Go template")
    p.set_defaults(func=cmd_info)
    events.flags(ss.add_parser("events", help="get real time events from the engine"))
