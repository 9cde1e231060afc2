"""The uid/gid maps of a container's new user namespace, written by `create` when init
asks ("userns"): directly as root, through newuidmap/newgidmap otherwise. Apart from
cove/runtime/create.py because a container without a user namespace never needs it:
cove-runtime's start-up budget (tests/runtime/test_hotpath.py) stays as it is."""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.oci.spec import IDMap, Spec


def write_id_maps(pid: int, spec: Spec) -> None:
    """Write the uid/gid maps of the user namespace `pid` just created.

    Root writes them directly. Anyone else may write one line mapping its own uid
    (gid) directly (for gids, only once /proc/PID/setgroups says "deny"); several
    ranges, or other ids, go through the setuid helpers newuidmap/newgidmap, which
    allow the ranges /etc/subuid and /etc/subgid grant the caller."""
    lin = spec.linux
    if os.geteuid() == 0:
        for key, file, maps in (("gidMappings", "gid_map", lin.gid_mappings),
                                ("uidMappings", "uid_map", lin.uid_mappings)):
            if maps:
                try:
                    _write(f"/proc/{pid}/{file}", map_lines(maps))
                except OSError as e:
                    raise CoveError(f"linux.{key}", os_why(e)) from None
        return
    for key, file, maps, own in (("gidMappings", "gid_map", lin.gid_mappings, os.getegid()),
                                 ("uidMappings", "uid_map", lin.uid_mappings, os.geteuid())):
        if not maps:
            continue
        if len(maps) == 1 and maps[0].host_id == own and maps[0].size == 1:
            try:
                if file == "gid_map":
                    _write(f"/proc/{pid}/setgroups", "deny")
                _write(f"/proc/{pid}/{file}", map_lines(maps))
            except OSError as e:
                raise CoveError(f"linux.{key}", os_why(e)) from None
        else:
            _newidmap("newuidmap" if file == "uid_map" else "newgidmap", pid, maps,
                      f"linux.{key}")


def map_lines(maps: list[IDMap]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


_HELPER_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin")


def _newidmap(helper: str, pid: int, maps: list[IDMap], what: str) -> None:
    """Run newuidmap/newgidmap PID ID HOSTID SIZE...; its complaint becomes the error."""
    exe = next((p for p in (os.path.join(d, helper) for d in _HELPER_DIRS)
                if os.access(p, os.X_OK)), "")
    if not exe:
        raise CoveError(what, f"{len(maps)} ranges (or ids other than our own) need "
                        f"{helper}, which is not installed (Debian: the uidmap package)")
    argv = [helper, str(pid)]
    for m in maps:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    r, w = os.pipe()
    try:
        try:
            child = os.posix_spawn(exe, argv, {"PATH": "/usr/bin:/bin"}, file_actions=[
                (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
        except OSError as e:
            raise CoveError(what, f"{exe}: {os_why(e)}") from None
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        _, status = os.waitpid(child, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        lines = out.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {code}"
        raise CoveError(what, f"{helper} failed: {why} (see /etc/sub{helper[3:6]})")


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
