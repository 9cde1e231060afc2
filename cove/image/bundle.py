"""Turn a rootfs and a command into an OCI bundle (config.json) for cove-runtime."""

from __future__ import annotations

import json
import os

from cove.oci.defaults import default_spec

TYPE_CHECKING = False
if TYPE_CHECKING:  # cove.oci.image is imported by the functions that need it
    from typing import Any

    from cove.oci.image import ContainerConfig


def write_bundle(bundle: str, rootfs: str, args: list[str], *, env: list[str] | None = None,
                 cwd: str = "/", uid: int = 0, gid: int = 0, terminal: bool = False,
                 hostname: str = "cove", readonly: bool = True) -> str:
    """Write `bundle/config.json` running `args` in `rootfs`; return the config path."""
    os.makedirs(bundle, exist_ok=True)
    spec = default_spec()
    proc = spec["process"]
    proc["args"] = args
    proc["terminal"] = terminal
    proc["cwd"] = cwd
    proc["user"] = {"uid": uid, "gid": gid}
    proc["env"] = [*proc["env"], *(env or [])]
    spec["root"] = {"path": os.path.abspath(rootfs), "readonly": readonly}
    spec["hostname"] = hostname
    # A read-only image root still needs scratch space where programs expect it.
    spec["mounts"] += [{"destination": d, "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=1777"]} for d in ("/tmp", "/run")]
    path = os.path.join(bundle, "config.json")
    with open(path, "w") as f:
        json.dump(spec, f, indent=2)
    return path


# -- images → bundles -----------------------------------------------------------------

def read_in_root(rootfs: str, path: str) -> str | None:
    """A small text file of the container's rootfs, symlinks resolved inside it."""
    from cove.sys import libc
    dfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = libc.openat2(dfd, path.lstrip("/"), os.O_RDONLY | os.O_CLOEXEC, 0,
                          libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        return f.read(4 << 20).decode(errors="replace")


def _table(text: str | None) -> list[list[str]]:
    return [line.split(":") for line in (text or "").splitlines()
            if line and not line.startswith("#")]


def resolve_user(rootfs: str, user: str) -> tuple[int, int, list[int]]:
    """`user[:group]` (names or numbers) → (uid, gid, additional gids), from the image's
    /etc/passwd and /etc/group as docker does."""
    from cove.errors import CoveError
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _table(read_in_root(rootfs, "/etc/passwd"))
    groups = _table(read_in_root(rootfs, "/etc/group"))
    uid: int | None = None
    gid = 0
    username = ""
    for ent in passwd:
        if len(ent) >= 4 and (ent[0] == name or (name.isdigit() and ent[2] == name)):
            uid, username = int(ent[2]), ent[0]
            gid = int(ent[3]) if ent[3].isdigit() else 0
            break
    if uid is None:
        if not name.isdigit():
            raise CoveError(f"user {name!r}", "not found in the image's /etc/passwd")
        uid = int(name)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            hit = [g for g in groups if len(g) >= 3 and g[0] == group]
            if not hit:
                raise CoveError(f"group {group!r}", "not found in the image's /etc/group")
            gid = int(hit[0][2])
    extra = sorted({int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit()
                    and username and username in g[3].split(",") and int(g[2]) != gid})
    return uid, gid, extra


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Later KEY=VALUE entries replace earlier ones; a bare KEY takes the host's value."""
    out: dict[str, str] = {}
    for e in [*base, *extra]:
        k, eq, v = e.partition("=")
        if not eq:
            if k in os.environ:
                out[k] = os.environ[k]
            continue
        out[k] = v
    return [f"{k}={v}" for k, v in out.items()]


def _rootless_maps(spec: dict[str, Any], uid: int, gid: int, extra: list[int],
                   user: str) -> None:
    """Map container ids 1.. to the caller's subordinate ranges, as rootless podman
    (cove.image.userns.id_maps). A user or group the maps leave out is refused here
    (the runtime could only fail on it with EINVAL); additional groups outside them
    are left out of `extra` (and all of them with the single mapping, whose setgroups
    is denied)."""
    from cove.errors import CoveError
    from cove.image import userns
    umaps, gmaps = userns.id_maps()
    lin = spec["linux"]
    lin["uidMappings"], lin["gidMappings"] = umaps, gmaps
    for kind, i, maps, file in (("uid", uid, umaps, userns.SUBUID),
                                ("gid", gid, gmaps, userns.SUBGID)):
        n = userns.map_size(maps)
        if i >= n:
            why = f"{kind} {i} is not mapped in the rootless user namespace " + (
                f"(only root is: {file} grants this user no range)" if n == 1
                else f"({n} ids from {file})")
            raise CoveError(f"user {user or '0'}", why)
    n = userns.map_size(gmaps)
    extra[:] = [g for g in extra if g < n] if n > 1 else []


def image_spec(cfg: ContainerConfig, rootfs: str, *, args: list[str],
               entrypoint: str | None = None, env: list[str] | None = None,
               workdir: str | None = None, user: str | None = None, terminal: bool = False,
               hostname: str = "cove") -> dict[str, Any]:
    """runc's default spec running an image: Entrypoint + Cmd (`args` replace Cmd,
    `entrypoint` replaces Entrypoint and drops the image's Cmd), Env (+ `env`),
    WorkingDir (or `workdir`), User (or `user`, resolved in the image)."""
    from cove.errors import CoveError
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        cmd = args
    else:
        ep = list(cfg.entrypoint or [])
        cmd = args or list(cfg.cmd or [])
    argv = ep + cmd
    if not argv:
        raise CoveError("run", "no command: the image has no Entrypoint or Cmd; give one")
    uid, gid, extra = resolve_user(rootfs, user if user is not None else cfg.user)
    # Not root: a rootless spec (user namespace mapping the caller to root, no cgroups).
    euid = os.geteuid()
    spec = default_spec(rootless=euid != 0, uid=euid, gid=os.getegid())
    if euid != 0:
        _rootless_maps(spec, uid, gid, extra, user if user is not None else cfg.user)
    proc = spec["process"]
    proc["args"] = argv
    proc["terminal"] = terminal
    proc["cwd"] = workdir or cfg.working_dir or "/"
    if not proc["cwd"].startswith("/"):
        raise CoveError("--workdir", f"must be an absolute path, not {proc['cwd']!r}")
    proc["user"] = {"uid": uid, "gid": gid}
    if extra:
        proc["user"]["additionalGids"] = extra
    image_env = cfg.env or [e for e in proc["env"] if e.startswith("PATH=")]
    proc["env"] = merge_env(["TERM=xterm"] if terminal else [],
                            [*image_env, f"HOSTNAME={hostname}", *(env or [])])
    if not any(e.startswith("PATH=") for e in proc["env"]):
        proc["env"].insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if uid != 0 or gid != 0:
        # runc's default grants caps to root only in effect; a non-root process gets none
        # ambient (as docker).
        proc["capabilities"]["ambient"] = []
    spec["root"] = {"path": os.path.abspath(rootfs), "readonly": False}
    spec["hostname"] = hostname
    return spec
