"""Restart policies and health checks, run by the root's monitor (cove/engine/monitor.py)
as events and timers of its loop: no process of their own, no poll of every record.

- **Restarts.** When a container's run ends (its finishing step is done), or when a
  monitor starts and finds a container that exited while none ran, its policy — `no`,
  `on-failure[:N]`, `always`, `unless-stopped`, never after `stop`/`kill`/`rm` by the
  user (`ManuallyStopped`) nor with `--rm` — decides. A restart is due after a backoff
  counted from the exit itself: 0.1 s doubling to 60 s, back to 0.1 s after a run of
  10 s. It runs in a child (which imports the engine: the monitor does not) that calls
  `containers.start`, whose request the monitor's loop answers meanwhile. A restart
  that fails is recorded, not counted (`RestartLog[-1].Error`, `State.Error`
  "restart failed: ...") and retried with the backoff, from the failed attempt.
- **Health checks.** While a container with a health check runs, a timer per container:
  the first check after min(interval, 1 s), then every interval from the start of the
  last one (one at a time). Each runs in a child: `cove-runtime exec --pid-file F NAME
  CMD`, SIGKILLed (in the container, by that pid, then the runtime) past the timeout,
  recorded in `State.Health` (the last 5 results; failures within the start period do
  not count); on `unhealthy`, `--health-on-failure kill|restart` acts.
- **Services.** A reconcile pass for a project with a desired state
  (`<root>/projects/*/desired.json`) when one of its containers exits or changes
  health, when the CLI changed it (a "reconcile" request), when a monitor starts, and
  then only when the last pass asked for one (its exit status: a rollout's delay, a
  deadline, an autoscaled service's next sample): a quiet project costs nothing. Each
  in a child that imports cove/engine/services/ (the monitor does not), one at a time
  per project (docs/services.md).
"""

from __future__ import annotations

import os
import sys
import time

from cove.engine import events, procs, state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from cove.engine.container.record import Healthcheck, HealthState, Record

BACKOFF_MIN, BACKOFF_MAX, RESET_AFTER = 0.1, 60.0, 10.0
# services (cove/engine/services/): a pass that failed is tried again this much later
SERVICES_RETRY = 5.0
PROJECT_LABEL = "com.docker.compose.project"
HEALTH_CHANGED = 3  # a check child's status when the container's health status changed


def services_projects(root: str) -> list[str]:
    """Projects with a desired state (`<root>/projects/<p>/desired.json`): listed with
    plain syscalls, so that the monitor imports nothing of services/."""
    base = os.path.join(root, "projects")
    try:
        return [p for p in os.listdir(base)
                if os.path.exists(os.path.join(base, p, "desired.json"))]
    except OSError:
        return []


def wants_restart(rec: Mapping[str, Any]) -> bool:
    pol = rec["HostConfig"]["RestartPolicy"]
    if rec.get("ManuallyStopped") or rec["HostConfig"].get("AutoRemove"):
        return False
    code = int(rec["State"]["ExitCode"])
    if pol["Name"] == "on-failure":
        n = int(pol.get("MaximumRetryCount") or 0)
        return code != 0 and (n == 0 or int(rec.get("RestartCount", 0)) < n)
    return pol["Name"] in ("always", "unless-stopped")


class Policy:
    """The monitor's policy state: what is due when, per container."""

    def __init__(self, root: str, later: Callable[[float, Callable[[], None]], None],
                 fork: Callable[[Callable[[], int], Callable[[int], None]], None],
                 watching: Callable[[str], bool]) -> None:
        self.root = root
        self.paths = state.Paths(root)
        self.later, self.fork, self.watching = later, fork, watching
        self.restart_at: dict[str, float] = {}  # wall clock
        self.backoff: dict[str, float] = {}
        self.failed_at: dict[str, float] = {}
        self.restarting: set[str] = set()
        self.started: dict[str, str] = {}  # StartedAt of the run whose checks are due
        self.checking: set[str] = set()
        self.svc_busy: set[str] = set()  # projects whose reconcile child runs
        self.svc_again: set[str] = set()  # ... and that want another pass after it
        self.svc_ticking = False  # a services_tick is scheduled (one at a time)
        self.svc_due: dict[str, float] = {}  # the pass a project's last one asked for
        self.tick_soon(0.0)  # a monitor that starts reconciles every project

    # -- services: the engine keeps each project's desired state --------------------------

    def tick_soon(self, delay: float) -> None:
        if not self.svc_ticking:
            self.svc_ticking = True
            self.later(delay, self.services_tick)

    def services_tick(self) -> None:
        """When a monitor starts: a pass for every project (one killed meanwhile)."""
        self.svc_ticking = False
        for p in services_projects(self.root):
            self.services_kick(p)

    def services_kick(self, project: str) -> None:
        """A reconcile pass for `project` in a child (which imports services/; the
        monitor does not); one at a time per project, another after it if asked, and
        the next when its exit status says (services/reconcile.py's wake_code)."""
        if project in self.svc_busy:
            self.svc_again.add(project)
            return
        self.svc_busy.add(project)
        root = self.root

        def child() -> int:
            from cove.engine.services import reconcile
            return reconcile.engine_pass(root, project)

        def done(rc: int) -> None:
            self.svc_busy.discard(project)
            if project in self.svc_again:
                self.svc_again.discard(project)
                self.services_kick(project)
            elif rc != 0:
                delay = SERVICES_RETRY if rc == 1 else (rc - 2) / 10
                due = time.monotonic() + delay
                self.svc_due[project] = due
                self.later(delay, lambda: self.services_due(project, due))
            else:
                self.svc_due.pop(project, None)  # converged: events only
        self.fork(child, done)

    def services_due(self, project: str, due: float) -> None:
        if self.svc_due.get(project) == due:  # (not superseded by a later pass)
            del self.svc_due[project]
            if os.path.exists(os.path.join(self.root, "projects", project,
                                           "desired.json")):
                self.services_kick(project)

    def services_changed(self, rec: Mapping[str, Any], kick: bool = True) -> None:
        """A project's container exited or changed health (`kick`: a pass now), or
        started (nothing: whoever started it is at work, and its pass said when the
        next is due)."""
        project = ((rec.get("Config") or {}).get("Labels") or {}).get(PROJECT_LABEL)
        if kick and project and os.path.exists(os.path.join(
                self.root, "projects", project, "desired.json")):
            self.services_kick(project)

    # -- restarts -------------------------------------------------------------------------

    def exited(self, name: str) -> None:
        """A run ended (or was found ended): schedule a restart if the policy wants one."""
        try:
            rec = state.load_record(self.paths.cdir(name))
        except Exception:
            return
        if rec is None or rec["State"]["Status"] in ("running", "paused"):
            return  # a run is on (this call was late, or a restart raced it)
        self.services_changed(rec)
        self.started.pop(name, None)
        if name in self.restarting:
            return
        st = rec["State"]
        if st["Status"] not in ("exited", "restarting") or not wants_restart(rec):
            self.restart_at.pop(name, None)
            return
        failed = self.failed_at.pop(name, None)
        ran = state.parse_rfc3339(st["FinishedAt"]) - state.parse_rfc3339(st["StartedAt"])
        delay = BACKOFF_MIN if ran >= RESET_AFTER and failed is None else \
            min(self.backoff.get(name, BACKOFF_MIN / 2) * 2, BACKOFF_MAX)
        self.backoff[name] = delay
        due = (state.parse_rfc3339(st["FinishedAt"]) if failed is None else failed) + delay
        self.restart_at[name] = due
        try:
            state.update_record(self.paths.cdir(name), lambda r: r["State"].update(
                {"Status": "restarting"}) if r["State"]["Status"] == "exited" else None)
        except Exception:
            pass
        self.later(max(0.0, due - time.time()), lambda: self.restart(name, due))

    def restart(self, name: str, due: float) -> None:
        if self.restart_at.get(name) != due or name in self.restarting:
            return  # superseded, or one runs
        del self.restart_at[name]
        try:
            rec = state.load_record(self.paths.cdir(name))
        except Exception:
            return
        if rec is None or rec["State"]["Status"] not in ("exited", "restarting") \
                or not wants_restart(rec):
            return
        delay = self.backoff.get(name, BACKOFF_MIN)
        self.restarting.add(name)
        root = self.root

        def child() -> int:
            return restart_child(root, name, delay)

        def done(rc: int) -> None:
            self.restarting.discard(name)
            if rc != 0:
                self.failed_at[name] = time.time()
            self.exited(name)  # (a run that ended already, while this one counted it)
        self.fork(child, done)

    # -- health checks --------------------------------------------------------------------

    def running(self, name: str, rec: Mapping[str, Any]) -> None:
        """A run began (or was adopted): its first check is due soon."""
        self.services_changed(rec, kick=False)
        hc = rec["Config"].get("Healthcheck")
        if not hc:
            return
        started = rec["State"]["StartedAt"]
        self.started[name] = started
        first = min(hc["Interval"], 1.0) if hc["Interval"] > 1.0 else hc["Interval"]
        self.later(first, lambda: self.check(name, started))

    def check(self, name: str, started: str) -> None:
        if self.started.get(name) != started or not self.watching(name):
            return  # that run is over
        try:
            rec = state.load_record(self.paths.cdir(name))
        except Exception:
            rec = None
        if rec is None or rec["State"]["Status"] != "running" \
                or rec["State"]["StartedAt"] != started:
            return
        hc = rec["Config"]["Healthcheck"]
        if hc is None:
            return  # (never: `running` scheduled checks for one that has it)
        self.later(hc["Interval"], lambda: self.check(name, started))
        if name in self.checking:
            return  # the last one still runs
        self.checking.add(name)
        root = self.root

        def checked(rc: int) -> None:
            self.checking.discard(name)
            if rc == HEALTH_CHANGED:
                self.services_changed(rec)
        self.fork(lambda: check_child(root, name, rec), checked)


# -- in the children ----------------------------------------------------------------------

def restart_child(root: str, name: str, delay: float) -> int:
    """Start the container again; 0 once it runs. The attempt goes into RestartLog when
    it is over, with the count (a restart that ran) or the error (one that failed) in
    the same write, so that a reader never sees one without the other."""
    paths = state.Paths(root)
    cdir = paths.cdir(name)
    rec = state.load_record(cdir)
    st = rec["State"] if rec else None
    entry: dict[str, Any] = {"ExitedAt": st.get("FinishedAt") if st else None,
                             "RestartedAt": state.now_rfc3339(), "Delay": delay,
                             "ExitCode": st.get("ExitCode") if st else None}
    try:
        from cove.engine import containers
        containers.start(root, name, policy_restart=True)
    except Exception as e:
        # recorded, not counted: RestartCount counts restarts that ran
        err = f"restart failed: {e}"
        print(f"{name}: {err}", file=sys.stderr, flush=True)

        def failure(r: Record) -> None:
            r["State"].update({"Status": "exited", "Error": err})
            r["RestartLog"] = [*r.get("RestartLog", []), {**entry, "Error": err}][-10:]
        try:
            state.update_record(cdir, failure)
        except Exception:
            pass
        return 1

    def ran(r: Record) -> None:
        r["RestartCount"] = int(r.get("RestartCount", 0)) + 1
        r["RestartLog"] = [*r.get("RestartLog", []), entry][-10:]
    state.update_record(cdir, ran)
    return 0


def _kill_check(pid: int, pid_file: str) -> None:
    """The check's process runs in the container, not under the runtime: kill it first
    (by the pid the runtime wrote; one still starting it writes that soon), then the
    runtime."""
    deadline = time.monotonic() + 5
    while procs.child_status(pid, block=False) is None and time.monotonic() < deadline:
        try:
            with open(pid_file) as f:
                os.kill(int(f.read().strip()), 9)
            break
        except (OSError, ValueError):
            time.sleep(0.05)
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def check_child(root: str, name: str, rec: Record) -> int:
    """Run one health check, record it, and act on `unhealthy`."""
    cdir = state.Paths(root).cdir(name)
    hc = rec["Config"]["Healthcheck"]
    if hc is None:
        return 0  # (never: `check` runs it for a container that has one)
    code, text, begin = _run_check(root, name, hc)
    in_start = time.time() - state.parse_rfc3339(rec["State"]["StartedAt"]) < hc["StartPeriod"]
    result: dict[str, Any] = {}

    def record(r: Record) -> None:
        if r["State"]["StartedAt"] != rec["State"]["StartedAt"]:
            return  # a new run since the check began
        if r["State"]["Status"] != "running" or r.get("ManuallyStopped"):
            return  # it failed because the container is being stopped or removed
        h: HealthState = r["State"].get("Health") or {"Status": "starting",
                                                      "FailingStreak": 0, "Log": []}
        h["Log"] = [*h["Log"], {"Start": begin, "End": state.now_rfc3339(),
                                "ExitCode": code, "Output": text[-4096:]}][-5:]
        if code == 0:
            h["Status"], h["FailingStreak"] = "healthy", 0
        elif not (in_start and h["Status"] == "starting"):
            h["FailingStreak"] += 1
            if h["FailingStreak"] >= hc["Retries"]:
                h["Status"] = "unhealthy"
        r["State"]["Health"] = h
        result.update(h)
    try:
        state.update_record(cdir, record)
    except Exception:
        return 1
    changed = bool(result) and \
        result["Status"] != (rec["State"].get("Health") or {}).get("Status")
    if changed:
        events.emit(root, "container", f"health_status: {result['Status']}", rec)
    if result.get("Status") == "unhealthy" and code != 0 and \
            result.get("FailingStreak") == hc["Retries"] and \
            not _act_on_unhealthy(root, name, rec["HostConfig"].get("HealthOnFailure", "none")):
        return 0
    if changed and PROJECT_LABEL in (rec["Config"].get("Labels") or {}):
        return HEALTH_CHANGED  # the monitor has the project reconciled
    return 0


def _run_check(root: str, name: str, hc: Healthcheck) -> tuple[int, str, str]:
    """Run the check's command in the container (`cove-runtime exec`), killed at its
    timeout: (its exit code or -1, its output or why it failed, when it began)."""
    import select

    from cove.engine.spawn import runtime_binary
    paths = state.Paths(root)
    cdir = paths.cdir(name)
    test = hc["Test"]
    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    begin = state.now_rfc3339()
    pid_file = os.path.join(cdir, f"health-{os.getpid()}.pid")
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = procs.spawn([runtime_binary(), "--root", paths.runtime_root, "exec",
                           "--pid-file", pid_file, name, *argv], null, w, w)
    finally:
        os.close(w)
        os.close(null)
    out, deadline = b"", time.monotonic() + hc["Timeout"]
    code = -1
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                _kill_check(pid, pid_file)
                procs.child_status(pid)
                text = f"health check timed out after {hc['Timeout']}s"
                break
            data = os.read(r, 65536)
            if data:
                out = (out + data)[-8192:]
                continue
            status = procs.child_status(pid)
            code = os.waitstatus_to_exitcode(status) if status is not None else -1
            text = out.decode(errors="replace")
            break
    finally:
        os.close(r)
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
    return code, text, begin


def _act_on_unhealthy(root: str, name: str, action: str) -> bool:
    """--health-on-failure: kill or restart a container that just became unhealthy.
    False (nothing done) when the user stopped or removed it meanwhile."""
    now: Mapping[str, Any] = state.load_record(state.Paths(root).cdir(name)) or {}
    if now.get("ManuallyStopped") or (now.get("State") or {}).get("Status") != "running":
        return False  # `stop`/`rm -f` since: the user's word wins
    try:
        from cove.engine import containers
        if action == "kill":
            containers.kill(root, name, "KILL", manual=False)
        elif action == "restart":
            containers.stop(root, name, 5)
            containers.start(root, name)
    except Exception as e:
        print(f"health action {name}: {e}", file=sys.stderr, flush=True)
    return True
