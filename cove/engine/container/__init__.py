"""One container's record, OCI spec and life cycle, a module per job, with imports
flowing one way:

    record.py    a new container's record from its flags: checked before anything is
                 made, no root needed
    mounts.py    -v/--mount/--tmpfs: volumes made, OCI mounts, the image's copy-up
    spec.py      the container's OCI spec (config.json)
    rtcmd.py     the engine's calls of cove-runtime
    refresh.py   the record against its processes (a dead monitor, a lost exit), and
                 the disposal of a container that is gone
    stop.py      kill, stop, wait, rm
    create.py, start.py, run.py (run, run -it), execute.py (exec)
    queries.py   inspect, ps, logs, top, stats, port and ps's status lines

cove/engine/containers.py re-exports what the CLI, the Python and Docker APIs and the
monitor call: they import it from there.
"""
