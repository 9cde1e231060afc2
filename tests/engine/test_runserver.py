"""`cove run` through its root's warm server (cove/cli/runserver.py): the same output,
exit status, environment, working directory, umask and signal handling as a `cove run`
that does the work itself; what the server can't run (another network namespace, -t)
run by the client as before; `supervisor stop` ends the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.lib.engine import Cove
from tests.lib.paths import RUNTIME
from tests.lib.wait import wait_for


def _server(root: str) -> int:
    try:
        with open(os.path.join(root, "run.pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/comm") as f:
            return pid if f.read().strip() == "cove-runserver" else 0
    except (OSError, ValueError):
        return 0


def _popen(root: str, *args: str, cwd: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", root, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "COVE_RUNTIME": RUNTIME,
                                          **(env or {})})


def test_run_through_the_server_is_the_same_run(cove: Cove, tmp_path: str) -> None:
    root = cove.root
    cove("run", "--rm", "--network", "none", "busybox", "true")
    pid = wait_for(lambda: _server(root), timeout=10, what="the run server")
    d = os.path.join(str(tmp_path), "cwd")
    os.mkdir(d)
    with open(os.path.join(d, "envf"), "w") as f:
        f.write("A=from-file\n")
    argv = ["run", "--rm", "--network", "none", "-e", "FOO", "--env-file", "envf",
            "--cidfile", "cid", "busybox", "sh", "-c", "echo $FOO $A; echo err >&2; exit 3"]
    got = []
    for server in ("1", "0"):
        p = _popen(root, *argv, cwd=d, env={"FOO": "bar", "COVE_RUN_SERVER": server})
        out, err = p.communicate(timeout=30)
        st = os.stat(os.path.join(d, "cid"))
        os.unlink(os.path.join(d, "cid"))
        got.append((out, err, p.returncode, oct(st.st_mode & 0o777)))
    assert got[0] == got[1] == ("bar from-file\n", "err\n", 3, got[0][3])
    bad = _popen(root, "run", "--bogus", "busybox", "true", cwd=d)
    assert bad.communicate(timeout=30)[1] == \
        "cove: run: unknown flag: --bogus (see 'cove run --help')\n"
    assert bad.returncode == 125
    assert _server(root) == pid  # the same server answered every run


def test_signals_reach_the_container_and_worker(cove: Cove, tmp_path: str) -> None:
    root = cove.root
    cove("run", "--rm", "--network", "none", "busybox", "true")
    wait_for(lambda: _server(root), timeout=10, what="the run server")
    script = 'trap "echo got; exit 7" TERM; sleep 20 & wait'
    p = _popen(root, "run", "--rm", "--network", "none", "--name", "sig", "busybox", "sh",
               "-c", script, cwd=str(tmp_path))
    wait_for(lambda: "running" in cove("inspect", "-f", "{{.State.Status}}", "sig",
                                       check=False).stdout, timeout=20, what="running")
    time.sleep(0.3)  # (its trap set)
    pid = _server(root)
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        assert f.read().split(), "the run is not the server's worker"
    p.send_signal(signal.SIGTERM)  # docker's --sig-proxy: to the container
    out, _ = p.communicate(timeout=20)
    assert (out, p.returncode) == ("got\n", 7)
    # without the proxy, SIGTERM ends the command itself (and, as the CLI, by it)
    p = _popen(root, "run", "--name", "nosig", "--sig-proxy=false", "--network", "none",
               "busybox", "sleep", "20", cwd=str(tmp_path))
    wait_for(lambda: "running" in cove("inspect", "-f", "{{.State.Status}}", "nosig",
                                       check=False).stdout, timeout=20, what="running")
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=20)
    assert p.returncode == -signal.SIGTERM
    cove("rm", "-f", "nosig")


def test_what_the_server_cannot_run_runs_as_before(cove: Cove) -> None:
    root = cove.root
    cove("run", "--rm", "--network", "none", "busybox", "true")
    wait_for(lambda: _server(root), timeout=10, what="the run server")
    # another network namespace than the server's: the client runs it itself
    r = subprocess.run(["unshare", "-n", sys.executable, "-m", "cove.cli.main", "--root",
                        root, "run", "--rm", "--network", "none", "busybox", "sh", "-c",
                        "ls /sys/class/net"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COVE_RUNTIME": RUNTIME})
    assert (r.returncode, r.stdout) == (0, "lo\n"), r.stderr
    r = cove("run", "--rm", "-t", "--network", "none", "busybox", "echo", "tty")
    assert r.stdout == "tty\n"  # (text mode: the terminal's \r\n read as \n)
    assert cove("run", "--rm", "-i", "--network", "none", "busybox", "cat",
                input="in\n").stdout == "in\n"
    cove("supervisor", "stop")
    wait_for(lambda: not _server(root), timeout=5, what="the server gone")
    assert not os.path.exists(os.path.join(root, "run.sock"))
