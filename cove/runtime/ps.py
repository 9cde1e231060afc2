"""`ps`: the processes of a container, from its cgroup."""

from __future__ import annotations

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as runtime_state


def pids(root: str, cid: str) -> list[int]:
    st = runtime_state.load(root, cid)
    if not st.data.get("cgroup"):
        return [st.pid] if st.alive() else []
    from cove.runtime.cgroups import open_manager_from_state

    mgr = open_manager_from_state(st.data["cgroup"])
    if not mgr.exists() and st.alive():
        # Rootless without a cgroup: the container's pid namespace holds its processes.
        from cove.runtime.kill import pidns_members

        return sorted(pidns_members(st.pid) or [st.pid])
    return sorted(mgr.pids())


def render(root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
    found = pids(root, cid)
    if fmt == "json":
        return jsonio.dumps(found) + "\n"
    if fmt != "table":
        raise CoveError(f"--format {fmt}", "expected table or json")
    import subprocess  # only here: `ps` is not on any start-up path

    try:
        out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise CoveError("ps", str(e)) from None
    lines = out.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise CoveError("ps", "no PID column in the output of ps")
    col = header.index("PID")
    keep = set(found)
    rows = [ln for ln in lines[1:] if len(ln.split()) > col and ln.split()[col].isdigit()
            and int(ln.split()[col]) in keep]
    return "\n".join([lines[0], *rows]) + "\n"
