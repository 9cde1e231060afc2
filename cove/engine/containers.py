"""Containers by name: create, run, start, stop, restart, kill, rm, inspect, wait, exec,
top, stats, port, logs and ps, over cove/image (rootfs, bundle) and cove-runtime.

Every container has a directory `<root>/containers/<name>/` with its record
(`container.json`, see `cove.engine.state`), its OCI bundle (`config.json` + the overlay
rootfs), its stdio FIFOs and its json-file log. A running container has a monitor
(`cove.engine.monitor`, one per state root), which also applies restart policies and
runs health checks (`cove.engine.policy`).

The work is done in cove/engine/container/, a module per job (its __init__ lists
them); this module is the one door the CLI, the Python and Docker APIs, the monitor's
steps and the policies call through, so it names everything they use.
"""

from __future__ import annotations

from cove.engine.container.create import create as create
from cove.engine.container.execute import exec_ as exec_
from cove.engine.container.queries import REVIVED as REVIVED
from cove.engine.container.queries import inspect_record as inspect_record
from cove.engine.container.queries import logs as logs
from cove.engine.container.queries import needs_monitor as needs_monitor
from cove.engine.container.queries import port as port
from cove.engine.container.queries import ps_records as ps_records
from cove.engine.container.queries import revive_monitor as revive_monitor
from cove.engine.container.queries import stats as stats
from cove.engine.container.queries import status_line as status_line
from cove.engine.container.queries import top as top
from cove.engine.container.queries import up_line as up_line
from cove.engine.container.record import ACTIVE as ACTIVE
from cove.engine.container.record import MIN_MEMORY as MIN_MEMORY
from cove.engine.container.record import Record as Record
from cove.engine.container.record import check_name as check_name
from cove.engine.container.refresh import cleanup as cleanup
from cove.engine.container.refresh import dispose as dispose
from cove.engine.container.refresh import monitor_alive as monitor_alive
from cove.engine.container.refresh import refresh_record as refresh_record
from cove.engine.container.refresh import teardown as teardown
from cove.engine.container.rtcmd import exec_argv as exec_argv
from cove.engine.container.rtcmd import rt_delete as rt_delete
from cove.engine.container.rtcmd import rt_quiet as rt_quiet
from cove.engine.container.rtcmd import runtime as runtime
from cove.engine.container.run import run as run
from cove.engine.container.sigproxy import PROXIED as PROXIED
from cove.engine.container.sigproxy import signals as signals
from cove.engine.container.spec import build_spec as build_spec
from cove.engine.container.start import adopt as adopt
from cove.engine.container.start import restart as restart
from cove.engine.container.start import spawn_monitor as spawn_monitor
from cove.engine.container.start import start as start
from cove.engine.container.stop import kill as kill
from cove.engine.container.stop import nap as nap
from cove.engine.container.stop import remove as remove
from cove.engine.container.stop import stop as stop
from cove.engine.container.stop import stop_all as stop_all
from cove.engine.container.stop import wait as wait
from cove.engine.container.stop import wait_status as wait_status
from cove.engine.options import RunOptions as RunOptions
from cove.engine.options import parse_duration as parse_duration
from cove.engine.options import parse_restart as parse_restart
from cove.engine.spawn import runtime_binary as runtime_binary

# The private names the engine's modules (attach.py) called before the split.
_monitor_alive = monitor_alive
_rt_quiet = rt_quiet
_rt_delete = rt_delete
_signals = signals
