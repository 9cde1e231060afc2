"""The supervisor (`cove-supervisor`): one per state root, started on demand by the engine
when a container has a restart policy or a health check, and stopped with
`cove supervisor stop`. It holds no container's stdio and is no container's parent (the
monitors are), so SIGKILL costs nothing but a pause in policy: on its return it reads
every record again and carries on.

Each tick (0.2 s) it
- applies restart policies to exited containers (no, on-failure[:N], always,
  unless-stopped; not after a manual stop) with exponential backoff: 0.1 s doubling to
  60 s, reset once a run lasted 10 s;
- runs due health checks (`cove-runtime exec ... sh -c CMD`, with a timeout) in threads
  and records Health (starting/healthy/unhealthy, FailingStreak, the last 5 results),
  acting on --health-on-failure (kill, restart) once a container is unhealthy;
- re-adopts running containers whose monitor died (a new monitor re-opens their FIFOs).

    python -m cove.engine.supervisor ROOT
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum
import fcntl
import os
import select
import sys
import time

from cove.engine import events
from cove.engine import state as S
from cove.engine.monitor import _comm, set_comm

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    import threading
    from types import ModuleType
    from typing import Any


class _suppress:
    """contextlib.suppress, without importing contextlib (and what it imports)."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)


def _containers() -> ModuleType:
    """cove.engine.containers, imported when first needed (a restart, a health check,
    an adoption): with its imports it is ~4 MiB of the supervisor's memory, which a
    supervisor watching healthy containers without checks never pays."""
    from cove.engine import containers
    return containers

COMM = "cove-supervisor"
BACKOFF_MIN, BACKOFF_MAX, RESET_AFTER = 0.1, 60.0, 10.0
TICK = 0.2


def _monitor_alive(rec: dict[str, Any]) -> bool:
    pid = int(rec.get("MonitorPid") or 0)
    return pid > 0 and S.pid_alive(pid) and _comm(pid) == "cove-monitor"


def running_pid(root: str) -> int:
    paths = S.Paths(root)
    try:
        with open(paths.supervisor_pid) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    return pid if pid > 0 and S.pid_alive(pid) and _comm(pid) == COMM else 0


def ensure(root: str) -> int:
    """The supervisor's pid, starting it when none runs."""
    pid = running_pid(root)
    if pid:
        return pid
    paths = S.Paths(root)
    os.makedirs(root, exist_ok=True)
    r, w = os.pipe()
    logf = os.open(paths.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    import subprocess

    env = {**os.environ, "COVE_RUNTIME": _containers().runtime_binary()}
    try:
        # Exec'ed, not forked by the zygote: its imports (subprocess, threading, the
        # engine) would grow the heap the monitors fork from, and cost each of them
        # more in pages they write than the supervisor saves (bench/engine).
        # With this process's module search path: the engine it imports for a restart
        # needs the third-party libraries too (cove/engine/spawn.py).
        from cove.engine import spawn
        subprocess.Popen(spawn.argv("supervisor", root, str(w)), pass_fds=[w],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                         start_new_session=True, env=env, cwd="/")
    finally:
        os.close(w)
        os.close(logf)
    with os.fdopen(r, "rb") as f:
        f.readline()
    return running_pid(root)


def stop_zygote(root: str) -> None:
    """End the root's monitor zygote (cove/engine/zygote.py), if one runs: monitors it
    forked are separate processes and carry on."""
    try:
        with open(os.path.join(root, "zygote.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid > 0 and S.pid_alive(pid) and _comm(pid) == "cove-zygote":
        os.kill(pid, signal.SIGKILL)
        with _suppress(ChildProcessError):
            os.waitpid(pid, 0)  # ours only when this process started it
    for name in ("zygote.pid", "zygote.sock"):
        with _suppress(OSError):
            os.unlink(os.path.join(root, name))


def stop(root: str, timeout: float = 10.0) -> bool:
    """Stop the supervisor (and the zygote) of `root`; whether a supervisor ran."""
    pid = running_pid(root)
    if not pid:
        stop_zygote(root)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while S.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if S.pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    stop_zygote(root)
    return True


def kill_check(p: subprocess.Popen[bytes], pid_file: str) -> None:
    """The check's process runs in the container, not under the runtime: kill it first
    (by the pid the runtime wrote; one still starting it writes that soon), then the
    runtime."""
    deadline = time.monotonic() + 5
    while p.poll() is None and time.monotonic() < deadline:
        with _suppress(OSError, ValueError):
            with open(pid_file) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
            break
        time.sleep(0.05)
    p.kill()
    p.communicate()


class Supervisor:
    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = S.Paths(root)
        self.stopping = False
        self.checks: dict[str, threading.Thread] = {}
        self.next_check: dict[str, float] = {}
        self.started_seen: dict[str, str] = {}
        self.restart_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.failed_at: dict[str, float] = {}  # when a restart attempt last failed
        self.live: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self.wake = -1  # read end of the signal wakeup pipe (main)

    # -- restart policies ---------------------------------------------------------------

    def wants_restart(self, rec: dict[str, Any]) -> bool:
        pol = rec["HostConfig"]["RestartPolicy"]
        if rec.get("ManuallyStopped") or rec["HostConfig"].get("AutoRemove"):
            return False
        code = int(rec["State"]["ExitCode"])
        if pol["Name"] == "on-failure":
            n = int(pol.get("MaximumRetryCount") or 0)
            return code != 0 and (n == 0 or int(rec.get("RestartCount", 0)) < n)
        return pol["Name"] in ("always", "unless-stopped")

    def policy(self, name: str, rec: dict[str, Any]) -> None:
        st = rec["State"]
        if st["Status"] not in ("exited", "restarting") or not self.wants_restart(rec):
            self.restart_at.pop(name, None)
            return
        if name not in self.restart_at:
            # due `delay` after the exit itself (not after we noticed it), or after the
            # last attempt when that failed
            failed = self.failed_at.pop(name, None)
            ran = S.parse_rfc3339(st["FinishedAt"]) - S.parse_rfc3339(st["StartedAt"])
            delay = BACKOFF_MIN if ran >= RESET_AFTER and failed is None else \
                min(self.backoff.get(name, BACKOFF_MIN / 2) * 2, BACKOFF_MAX)
            self.backoff[name] = delay
            base = S.parse_rfc3339(st["FinishedAt"]) if failed is None else failed
            self.restart_at[name] = base + delay
            with _suppress(Exception):
                S.update(self.paths.cdir(name), lambda r: r["State"].update(
                    Status="restarting") if r["State"]["Status"] == "exited" else None)
        if time.time() >= self.restart_at[name]:
            del self.restart_at[name]
            delay = self.backoff.get(name, BACKOFF_MIN)

            def note(r: dict[str, Any]) -> None:
                entry = {"ExitedAt": r["State"]["FinishedAt"], "RestartedAt": S.now_rfc3339(),
                         "Delay": delay, "ExitCode": r["State"]["ExitCode"]}
                r["RestartLog"] = [*r.get("RestartLog", []), entry][-10:]
            try:
                S.update(self.paths.cdir(name), note)
                _containers().start(self.root, name, policy_restart=True)
            except Exception as e:
                # recorded, not counted: RestartCount counts restarts that ran; the
                # attempt is retried with the backoff
                err = f"restart failed: {e}"
                print(f"{name}: {err}", file=sys.stderr, flush=True)
                self.failed_at[name] = time.time()

                def record_failure(r: dict[str, Any]) -> None:
                    r["State"].update(Status="exited", Error=err)
                    if r.get("RestartLog"):
                        r["RestartLog"][-1]["Error"] = err
                with _suppress(Exception):
                    S.update(self.paths.cdir(name), record_failure)

    def next_due(self) -> float:
        """Seconds to sleep: a tick, or less when a restart is due sooner."""
        due = min(self.restart_at.values(), default=time.time() + TICK)
        return max(0.01, min(TICK, due - time.time()))

    # -- health checks ------------------------------------------------------------------

    def health(self, name: str, rec: dict[str, Any]) -> None:
        hc = rec["Config"].get("Healthcheck")
        st = rec["State"]
        if not hc or st["Status"] != "running":
            self.next_check.pop(name, None)
            return
        if self.started_seen.get(name) != st["StartedAt"]:
            self.started_seen[name] = st["StartedAt"]
            self.next_check[name] = time.monotonic() + min(hc["Interval"], 1.0) \
                if hc["Interval"] > 1.0 else time.monotonic() + hc["Interval"]
        t = self.checks.get(name)
        if t is not None and t.is_alive():
            return
        if time.monotonic() >= self.next_check.get(name, 0):
            self.next_check[name] = time.monotonic() + hc["Interval"]
            import threading

            t = threading.Thread(target=self.check, args=(name, rec), daemon=True)
            self.checks[name] = t
            t.start()

    def check(self, name: str, rec: dict[str, Any]) -> None:
        import subprocess
        import threading

        hc = rec["Config"]["Healthcheck"]
        test = hc["Test"]
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        begin = S.now_rfc3339()
        pid_file = os.path.join(self.paths.cdir(name), f"health-{threading.get_ident()}.pid")
        p = subprocess.Popen([*_containers().runtime(self.paths), "exec", "--pid-file",
                              pid_file, name, *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.live[name] = (p, pid_file)
        try:
            stdout, _ = p.communicate(timeout=hc["Timeout"])
            code, out = p.returncode, stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            kill_check(p, pid_file)
            code, out = -1, f"health check timed out after {hc['Timeout']}s"
        finally:
            self.live.pop(name, None)
            with _suppress(FileNotFoundError):
                os.unlink(pid_file)
        in_start = time.time() - S.parse_rfc3339(rec["State"]["StartedAt"]) < hc["StartPeriod"]
        result: dict[str, Any] = {}

        def record(r: dict[str, Any]) -> None:
            h = r["State"].get("Health") or {"Status": "starting", "FailingStreak": 0,
                                             "Log": []}
            if r["State"]["StartedAt"] != rec["State"]["StartedAt"]:
                return  # a new run since the check began
            h["Log"] = [*h["Log"], {"Start": begin, "End": S.now_rfc3339(),
                                    "ExitCode": code, "Output": out[-4096:]}][-5:]
            if code == 0:
                h["Status"], h["FailingStreak"] = "healthy", 0
            elif not (in_start and h["Status"] == "starting"):
                h["FailingStreak"] += 1
                if h["FailingStreak"] >= hc["Retries"]:
                    h["Status"] = "unhealthy"
            r["State"]["Health"] = h
            result.update(h)
        try:
            S.update(self.paths.cdir(name), record)
        except Exception:
            return
        if result and result["Status"] != (rec["State"].get("Health") or {}).get("Status"):
            events.emit(self.root, "container", f"health_status: {result['Status']}", rec)
        if result.get("Status") == "unhealthy" and code != 0 and \
                result.get("FailingStreak") == hc["Retries"]:
            action = rec["HostConfig"].get("HealthOnFailure", "none")
            try:
                if action == "kill":
                    _containers().kill(self.root, name, "KILL", manual=False)
                elif action == "restart":
                    _containers().stop(self.root, name, 5)
                    _containers().start(self.root, name)
            except Exception as e:
                print(f"health action {name}: {e}", file=sys.stderr, flush=True)

    # -- adoption -----------------------------------------------------------------------

    def adopt(self, name: str, rec: dict[str, Any]) -> None:
        st = rec["State"]
        if st["Status"] not in ("running", "paused") or _monitor_alive(rec):
            return
        if S.pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
            if os.path.exists(os.path.join(self.paths.cdir(name), "stdout.fifo")):
                _containers().adopt(self.root, name)
        else:
            _containers().refresh(self.paths, name)

    def loop(self) -> None:
        while not self.stopping:
            for name in S.all_names(self.paths):
                try:
                    rec = S.load(self.paths.cdir(name))
                    if rec is None:
                        continue
                    self.adopt(name, rec)
                    rec = S.load(self.paths.cdir(name)) or rec
                    self.policy(name, rec)
                    self.health(name, rec)
                except Exception as e:
                    print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            self.wait(self.next_due())

    def wait(self, timeout: float) -> None:
        """Sleep until the next tick, or until a monitor reports an exit (SIGUSR1)."""
        try:
            ready, _, _ = select.select([self.wake], [], [], timeout)
        except InterruptedError:  # pragma: no cover
            return
        if ready:
            with _suppress(BlockingIOError):
                os.read(self.wake, 512)


def main(argv: list[str]) -> int:
    root = argv[0]
    sync = int(argv[1]) if len(argv) > 1 else -1
    set_comm(COMM)
    paths = S.Paths(root)
    lock = os.open(os.path.join(root, "supervisor.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if sync >= 0:
            os.write(sync, b"running\n")
        return 0
    S.write_atomic(paths.supervisor_pid, f"{os.getpid()}\n".encode(), 0o644)
    sup = Supervisor(root)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGUSR1, lambda _s, _f: None)
    sup.wake = wake_r

    def term(_s: int, _f: object) -> None:
        sup.stopping = True
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if sync >= 0:
        os.write(sync, b"ok\n")
        os.close(sync)
    sup.loop()
    for p, pid_file in list(sup.live.values()):  # checks in flight die with us
        with _suppress(Exception):
            kill_check(p, pid_file)
    with _suppress(FileNotFoundError):
        os.unlink(paths.supervisor_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
