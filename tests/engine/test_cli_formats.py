"""docker's habits in `cove`: Go-template `--format` (ps, images, inspect, volumes,
networks, info, version, events), `ps` filters, columns and human times, `logs`
--tail/--since/--until/-t/--details, `version`, `info`, `--help` in docker's groups,
`system df`/`prune`, and the event log with `cove events`."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cove.cli.format import Template, render_list, tabwrite
from cove.engine.state import parse_rfc3339
from cove.errors import CoveError
from tests.lib.engine import Cove
from tests.lib.paths import ROOT, RUNTIME

DATA = {"Name": "web", "State": {"Status": "running", "Pid": 7, "Health": None},
        "Config": {"Env": ["A=1", "B=2"], "Labels": {"tier": "front", "x": "y"}},
        "Mounts": [], "Interval": 30.0, "Big": 1e6}


def render(src: str, data: object = DATA) -> str:
    return Template(src).render(data)


def test_templates_as_go_writes_them() -> None:
    assert render("{{.Name}} {{.State.Status}} {{.State.Pid}}") == "web running 7"
    assert render("{{json .State}}") == '{"Status":"running","Pid":7,"Health":null}'
    assert render('{{index .Config.Labels "tier"}}|{{index .Config.Labels "no"}}') == "front|"
    assert render("{{range .Config.Env}}[{{.}}]{{end}}") == "[A=1][B=2]"
    assert render("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}") == "tier=front;x=y;"
    assert render("{{range .Mounts}}m{{else}}none{{end}}") == "none"
    assert render('{{if eq .State.Status "running"}}up{{else}}down{{end}}') == "up"
    assert render("{{if .Mounts}}a{{else if .Name}}b{{else}}c{{end}}") == "b"
    assert render("{{println .Name}}") == "web\n"
    assert render('{{upper .Name}} {{lower "ABC"}} {{title "a b"}}') == "WEB abc A B"
    assert render('{{join .Config.Env ","}} {{len .Config.Env}}') == "A=1,B=2 2"
    assert render("{{.Name | upper | printf \"%-5s|\"}}") == "WEB  |"
    assert render("{{with .State}}{{.Pid}}{{end}}{{$n := .Name}} {{$n}}") == "7 web"
    assert render("a {{- .Name -}} b{{/* comment */}}") == "awebb"
    # values print as Go prints them
    assert render("{{.Config.Env}} {{.Config.Labels}}") == "[A=1 B=2] map[tier:front x:y]"
    assert render("{{.Interval}} {{.Big}} {{.Missing}} {{.State.Health}}") == \
        "30 1e+06 <no value> <no value>"
    assert render("{{json .Interval}}") == "30"
    for bad, why in (("{{.Name", "unclosed action"), ("{{nope .Name}}", 'function "nope"'),
                     ("{{end}}", "unexpected {{end}}"), ("{{if .Name}}x", "unexpected EOF"),
                     ("{{.Name.X}}", "can't evaluate field X"),
                     ("{{index .Config.Env 9}}", "index out of range")):
        with pytest.raises(CoveError) as e:
            render(bad)
        assert why in str(e.value) and str(e.value).startswith("template parsing error: ")
        assert "\n" not in str(e.value)


def test_table_prefix_and_tabwriter(capsys: pytest.CaptureFixture[str]) -> None:
    items = [{"ID": "abc", "Names": "first"}, {"ID": "0123456789abcdef", "Names": "x"}]
    render_list(r"table {{.ID}}\t{{.Names}}", items, "", {"ID": "CONTAINER ID",
                                                          "Names": "NAMES"})
    assert capsys.readouterr().out == ("CONTAINER ID       NAMES\n"
                                       "abc                first\n"
                                       "0123456789abcdef   x\n")
    render_list("{{.Names}}:{{upper .ID}}", items, "", {})
    assert capsys.readouterr().out == "first:ABC\nx:0123456789ABCDEF\n"
    render_list("{{json .}}", items[:1], "", {})
    assert json.loads(capsys.readouterr().out) == items[0]
    with pytest.raises(CoveError, match="can't evaluate field Nope"):
        render_list("{{.Nope}}", items, "", {})
    # columns are at least 10 wide, 3 spaces apart; the last is not padded
    assert tabwrite(["a\tb\tc", "aaaaaaaaaaaa\tb\tc"]) == \
        "a              b         c\naaaaaaaaaaaa   b         c\n"


def test_version_info_and_help(cove: Cove) -> None:
    from cove import __version__
    assert re.fullmatch(rf"Cove version {re.escape(__version__)}, build \S+\n",
                        cove("--version").stdout)
    out = cove("version").stdout
    assert out.startswith("Client: Cove\n Version:           " + __version__ + "\n")
    assert "\nServer: Cove Engine\n Engine:\n  Version:          " in out
    assert re.search(r" OS/Arch:\s+linux/\w+\n", out) and " Python version: " in out
    assert cove("version", "--format", "{{.Client.Version}}").stdout == __version__ + "\n"
    assert json.loads(cove("version", "-f", "{{json .Server}}").stdout)["Version"] == \
        __version__
    cove("run", "--network", "none", "--name", "done", "busybox", "true")
    info = cove("info").stdout
    for line in (" Containers: 1\n  Running: 0\n  Paused: 0\n  Stopped: 1\n",
                 " Images: 1\n", " Storage Driver: overlay\n", " Cgroup Version: ",
                 " Cgroup Driver: cgroupfs\n", " Kernel Version: ", " Operating System: ",
                 f" CPUs: {os.cpu_count()}\n", " Total Memory: ",
                 f" Cove Root Dir: {cove.root}\n", " Runtimes: cove-runtime"):
        assert line in info, (line, info)
    assert cove("info", "--format", "{{.ContainersStopped}} {{.Driver}} {{.DockerRootDir}}"
                ).stdout == f"1 overlay {cove.root}\n"
    r = cove("info", "--format", "{{.Oops", check=False)
    assert r.returncode == 1 and r.stderr.startswith("cove: template parsing error:")
    assert r.stderr.count("\n") == 1 and r.stdout == ""
    # help in docker's groups, one line a command
    h = cove("--help").stdout
    assert h.startswith("Usage:  cove [OPTIONS] COMMAND\n")
    common, manage, rest = (h.index("\nCommon Commands:\n"),
                            h.index("\nManagement Commands:\n"), h.index("\nCommands:\n"))
    assert common < manage < rest
    assert re.search(r"\n  ps +List containers\n", h[common:manage])
    assert re.search(r"\n  system +Manage Cove\n", h[manage:rest])
    assert re.search(r"\n  events +Get real time events", h[rest:])
    assert cove().stdout == h  # no command: the help, as docker
    assert "usage: cove ps" in cove("help", "ps").stdout
    h = cove("logs", "--help").stdout
    assert re.search(r"container +the container", h)
    for flag in ("--until", "--details", "-n TAIL, --tail TAIL", "--since"):
        assert flag in h


def test_every_positional_argument_is_described() -> None:
    from cove.cli.main import parser
    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for act in p._actions:
            if isinstance(act, argparse._SubParsersAction):
                for name, sp in act.choices.items():
                    walk(sp, f"{path} {name}")
            elif not act.option_strings and not act.help:
                missing.append(f"{path}: {act.dest}")
    walk(parser(None), "cove")
    assert not missing, missing


def test_ps_columns_filters_and_formats(cove: Cove) -> None:
    cove("run", "--network", "none", "--name", "ok", "busybox", "true")
    cove("run", "--network", "none", "--name", "bad", "busybox", "sh", "-c", "exit 3",
         check=False)
    cove("run", "-d", "--network", "none", "--name", "srv", "--label", "tier=front",
         "busybox", "sh", "-c", "while :; do sleep 0.2; done; echo a-long-command-line")
    table = cove("ps").stdout.splitlines()
    assert re.fullmatch(r"CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +PORTS +NAMES",
                        table[0])
    assert len(table) == 2 and table[1].endswith(" srv")
    assert '"sh -c while :; do s…"' in table[1]  # docker's quote and ellipsis, 20 wide
    assert re.search(r"   Up (\d+ seconds?|Less than a second)  ", table[1])
    every = cove("ps", "-a").stdout
    assert re.search(r"Exited \(3\) (\d+ seconds?|Less than a second) ago", every)
    assert re.search(r"Exited \(0\) (\d+ seconds?|Less than a second) ago", every)

    def names(*args: str) -> list[str]:
        return cove("ps", "--format", "{{.Names}}", *args).stdout.split()
    assert names("-a") == ["srv", "bad", "ok"]  # newest first
    assert names() == ["srv"]
    assert names("-f", "status=exited") == ["bad", "ok"]
    assert names("-a", "-f", "exited=3") == ["bad"]
    assert names("-a", "-f", "name=^o") == ["ok"]
    assert names("-a", "-f", "label=tier") == ["srv"]
    assert names("-a", "-f", "label=tier=back") == []
    assert names("-a", "-f", "ancestor=busybox", "-f", "status=running") == ["srv"]
    assert names("-a", "-f", "name=ok", "-f", "name=bad") == ["bad", "ok"]
    assert names("-a", "-f", "health=none", "-n", "2") == ["srv", "bad"]
    assert names("-l") == ["srv"]
    sid = cove("ps", "-q").stdout.strip()
    assert len(sid) == 12 and names("-a", "-f", f"id={sid[:6]}") == ["srv"]
    assert len(cove("ps", "-q", "--no-trunc").stdout.strip()) == 64
    rows = cove("ps", "-a", "--format", r"table {{.ID}}\t{{.Names}}\t{{.State}}"
                ).stdout.splitlines()
    assert re.fullmatch(r"CONTAINER ID   NAMES +STATE", rows[0])
    assert re.fullmatch(rf"{sid}   srv +running", rows[1])
    item = json.loads(cove("ps", "--format", "{{json .}}").stdout)
    assert item["Names"] == "srv" and item["State"] == "running"
    assert item["Labels"] == "tier=front" and item["Command"].startswith('"sh -c')
    assert cove("ps", "--format", '{{.Label "tier"}}').stdout == "front\n"
    assert "SIZE" in cove("ps", "-s").stdout.splitlines()[0]
    for args, why in ((["-f", "bogus=1"], "invalid filter 'bogus'"),
                      (["-f", "status=sleeping"], "invalid filter value"),
                      (["-f", "name"], "bad format of filter"),
                      (["--format", "{{.Nope}}"], "can't evaluate field Nope")):
        r = cove("ps", *args, check=False)
        assert r.returncode == 1 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # inspect -f on containers and images; images --format
    assert cove("inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}",
                "bad", "srv").stdout == "bad exited 3\nsrv running 0\n"
    assert cove("inspect", "--format", '{{index .Config.Labels "tier"}} {{json .Config.Cmd}}',
                "srv").stdout.startswith("front [")
    assert cove("inspect", "-f", "{{.Id}}", "busybox").stdout.startswith("sha256:")
    assert cove("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == \
        "localhost/busybox:latest\n"
    assert cove("images").stdout.split("\n")[0].split() == \
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    cove("volume", "create", "data")
    assert cove("volume", "ls", "--format", "{{.Name}}/{{.Driver}}").stdout == "data/local\n"
    assert cove("volume", "inspect", "-f", "{{.Mountpoint}}", "data").stdout == \
        f"{cove.root}/volumes/data/_data\n"
    assert cove("inspect", "--type", "volume", "-f", "{{.Name}}", "data").stdout == "data\n"
    cove("volume", "rm", "data")
    assert cove("network", "ls", "--format", "{{.Name}}").stdout == ""
    cove("rm", "-f", "srv")


def test_logs_tail_since_until_timestamps_details(cove: Cove) -> None:
    cove("run", "--network", "none", "--name", "talk", "busybox", "sh", "-c",
         "echo one; echo two >&2; sleep 1.1; echo three")
    log = os.path.join(cove.root, "containers", "talk", "talk-json.log")
    times = [json.loads(x)["time"] for x in open(log)]
    assert len(times) == 3
    assert cove("logs", "talk").stdout == "one\nthree\n"
    assert cove("logs", "-n", "1", "talk").stdout == "three\n"
    r = cove("logs", "--tail", "2", "talk")
    assert (r.stdout, r.stderr) == ("three\n", "two\n")
    assert cove("logs", "--until", times[1], "talk").stdout == "one\n"  # inclusive
    assert cove("logs", "--until", times[1], "talk").stderr == "two\n"
    assert cove("logs", "--since", times[2], "talk").stdout == "three\n"
    unix = parse_rfc3339(times[2]) - 0.5
    assert cove("logs", "--since", f"{unix:.3f}", "talk").stdout == "three\n"
    assert cove("logs", "--since", "1h", "--until", "1h", "talk").stdout == ""
    assert cove("logs", "-t", "-n", "1", "talk").stdout == f"{times[2]} three\n"
    assert cove("logs", "--details", "-n", "1", "talk").stdout == " three\n"
    assert cove("logs", "-t", "--details", "-n", "1", "talk").stdout == f"{times[2]}  three\n"
    for args, why in ((["--tail", "x"], "--tail x"), (["--until", "soon"], "--until soon")):
        r = cove("logs", *args, "talk", check=False)
        assert r.returncode == 1 and r.stderr.startswith(f"cove: {why}: "), r.stderr
    # follow stops at --until
    cove("run", "-d", "--network", "none", "--name", "tick", "busybox", "sh", "-c",
         "while :; do echo t; sleep 0.1; done")
    start = time.monotonic()
    r = cove("logs", "-f", "--until", "2s", "tick")  # (2s ago: history only)
    assert time.monotonic() - start < 10
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    r = cove("logs", "-f", "--until", future, "tick", timeout=20)
    assert r.stdout.count("t\n") >= 5
    cove("rm", "-f", "tick")


def test_system_df_and_prune(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    c("run", "--network", "none", "--name", "gone", "-v", "/anon", "busybox", "sh", "-c",
      "head -c 300000 /dev/zero > /big")
    c("run", "-d", "--network", "none", "--name", "kept", "busybox", "sleep", "60")
    c("volume", "create", "named")
    c("network", "create", "spare")
    df = c("system", "df").stdout.splitlines()
    assert re.fullmatch(r"TYPE +TOTAL +ACTIVE +SIZE +RECLAIMABLE", df[0])
    assert re.fullmatch(r"Images +1 +1 +\S+ +0B \(0%\)", df[1])
    assert re.match(r"Containers +2 +1 +3\d\d\.\dkB +3\d\d\.\dkB \(100%\)", df[2]), df
    assert re.match(r"Local Volumes +2 +1 ", df[3]) and df[4].startswith("Build Cache ")
    assert c("system", "df", "--format", "{{.Type}}={{.TotalCount}}").stdout == \
        "Images=1\nContainers=2\nLocal Volumes=2\nBuild Cache=0\n"
    r = c("system", "prune", input="n\n", check=False)
    assert r.stdout.startswith("WARNING! This will remove:\n  - all stopped containers\n")
    assert "Are you sure you want to continue? [y/N] " in r.stdout
    assert r.returncode == 1 and r.stderr == "cove: system prune: cancelled\n"
    assert c("ps", "-aq").stdout.count("\n") == 2
    out = c("system", "prune", "-f", "--volumes").stdout
    assert re.match(r"Deleted Containers:\n[0-9a-f]{64}\n\nDeleted Networks:\nspare\n\n", out)
    assert re.search(r"\nTotal reclaimed space: 3\d\d\.?\d*kB\n$", out), out
    assert "Deleted Images" not in out  # busybox is named: not dangling
    assert c("ps", "-a", "--format", "{{.Names}}").stdout == "kept\n"
    # (the stopped container's anonymous volume went with it; a named one stays
    # unless -a)
    assert [v["Name"] for v in json.loads(c("volume", "ls", "--format", "json").stdout)] \
        == ["named"]
    c("rm", "-f", "kept")
    out = c("system", "prune", "-a", "-f", "--volumes").stdout
    assert "Deleted Volumes:\nnamed\n" in out
    assert "Deleted Images:\nuntagged: localhost/busybox:latest\ndeleted: sha256:" in out
    assert c("images", "-q").stdout == ""


def test_events_follow_and_history(cove: Cove) -> None:
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    follower = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", cove.root,
                                 "events", "--filter", "type=container"], cwd=str(ROOT),
                                env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # (it starts at the end of the log: only what follows)
        cid = cove("run", "-d", "--network", "none", "--name", "ev", "busybox", "sleep",
                   "30").stdout.strip()
        cove("kill", "ev")
        cove("wait", "ev")
        cove("rm", "ev")
        cove("volume", "create", "v")  # filtered out
        lines: list[str] = []
        assert follower.stdout is not None
        while not lines or " destroy " not in lines[-1]:
            lines.append(follower.stdout.readline())
            assert lines[-1], lines  # (EOF: the follower died)
    finally:
        follower.kill()
        follower.wait()
    actions = [ln.split()[2] for ln in lines]
    assert actions == ["create", "start", "kill", "die", "destroy"], lines
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{9}}(Z|[+-]\d\d:\d\d) "
                        rf"container die {cid} \(exitCode=137, image=busybox, name=ev\)\n",
                        lines[3])
    assert "signal=9" in lines[2]
    # the history: --since/--until, filters, templates, json
    hist = cove("events", "--since", "5m", "--until", "0s", "--format",
                "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}").stdout.splitlines()
    assert hist == ["container create ev", "container start ev", "container kill ev",
                    "container die ev", "container destroy ev", "volume create <no value>"]
    assert cove("events", "--since", "5m", "--until", "0s", "-f", "event=die", "-f",
                "container=ev").stdout.count("\n") == 1
    raw = cove("events", "--since", "5m", "--until", "0s", "--format", "json",
               "--filter", "volume=v").stdout
    ev = json.loads(raw)
    assert (ev["Type"], ev["Action"], ev["Actor"]["ID"]) == ("volume", "create", "v")
    assert cove("events", "--until", "0s").stdout.count("\n") == 6  # all, up to now
    r = cove("events", "--since", "5m", "--until", "0s", "-f", "colour=red", check=False)
    assert r.returncode == 1 and "invalid filter 'colour'" in r.stderr
    # a long log is rotated: one old file kept, the reader reads across
    from cove.engine import events
    for i in range(3):
        events.emit(cove.root, "volume", "create", f"pad{i}", padding="x" * 600_000)
    assert os.path.exists(os.path.join(cove.root, "events.log.1"))
    assert os.path.getsize(os.path.join(cove.root, "events.log.1")) <= 2 * events.MAX_SIZE
    tail = cove("events", "--since", "5m", "--until", "0s", "--format",
                "{{.Actor.ID}}").stdout.split()
    assert tail[-1] == "pad2"


def test_read_only_system_commands_make_no_root(tmp_path: Path) -> None:
    root = str(tmp_path / "no" / "root")
    c = Cove(root)
    for args in (["info"], ["system", "df"], ["events", "--since", "1h", "--until", "0s"],
                 ["version"], ["ps", "-a", "--format", "{{.ID}}"]):
        r = c(*args, check=False)
        assert r.returncode == 0, (args, r.stderr)
    assert not os.path.exists(tmp_path / "no")
