"""The compose file: interpolation, normalization, dependency order, and bad input (one
line naming the key path, nothing made). No containers: the model only, and `cove up`
of bad files against an empty state root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cove.engine.services import compose
from cove.errors import CoveError

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None,
          dotenv: str | None = None) -> dict[str, Any]:
    d = tmp_path / "proj"
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(text)
    if dotenv is not None:
        (d / ".env").write_text(dotenv)
    return compose.load(str(d / "compose.yaml"), environ=env or {})


def test_model_interpolation_and_defaults(tmp_path: Path) -> None:
    m = _load(tmp_path, """
name: My_App
services:
  web:
    image: "busybox:${TAG:-latest}"
    command: echo "${GREETING}" $$HOME
    environment: [A=1, "B=${B-unset}"]
    ports: ["127.0.0.1:${PORT}:80/udp", {target: 81, published: 9001}]
    deploy: {replicas: 2, update_config: {order: start-first, delay: 1m30s}}
    healthcheck: {test: [CMD, wget, -q, "http://x/"], interval: 500ms}
    depends_on: {db: {condition: service_healthy}}
  db: {image: busybox}
""", env={"GREETING": "hi there", "PORT": "8080"}, dotenv="TAG=1.36\nB=from-dotenv\n")
    assert m["name"] == "my_app"
    s = m["services"]["web"]
    assert s["image"] == "busybox:1.36"
    assert s["command"] == ["echo", "hi there", "$HOME"]
    assert s["environment"] == {"A": "1", "B": "from-dotenv"}
    assert s["ports"] == [{"host_ip": "127.0.0.1", "host_port": 8080, "proto": "udp",
                           "target": 80},
                          {"host_ip": "", "host_port": 9001, "proto": "tcp", "target": 81}]
    assert s["replicas"] == 2 and s["update_config"]["order"] == "start-first"
    assert s["update_config"]["delay"] == 90.0
    assert s["healthcheck"]["test"] == "wget -q http://x/"
    assert s["healthcheck"]["interval"] == 0.5


def test_profiles_and_order(tmp_path: Path) -> None:
    m = _load(tmp_path, """
services:
  a: {image: busybox, depends_on: [b, c]}
  b: {image: busybox, depends_on: [c]}
  c: {image: busybox}
  dbg: {image: busybox, profiles: [debug]}
""")
    assert set(m["services"]) == {"a", "b", "c"}
    assert compose.order(m["services"]) == ["c", "b", "a"]


BAD = [
    ("services: {web: {image: busybox, deploy: {replicas: three}}}",
     "compose.yaml: services.web.deploy.replicas: expected an integer"),
    ("services: {web: {image: busybox, deploy: {replicas: -1}}}",
     "compose.yaml: services.web.deploy.replicas: must be 0 or more"),
    ("services: {web: {image: busybox, port: ['80']}}",
     "compose.yaml: services.web.port: unknown key"),
    ("services: {web: {image: busybox, network_mode: host}}",
     "compose.yaml: services.web.network_mode: unknown key (not supported here)"),
    ("services: {web: {image: [busybox]}}", "compose.yaml: services.web.image: expected a "
                                            "string"),
    ("services: {a: {image: busybox, depends_on: [b]}, b: {image: busybox, "
     "depends_on: [a]}}", "dependency cycle: a -> b -> a"),
    ("services: {a: {image: busybox, depends_on: [nope]}}",
     "compose.yaml: services.a.depends_on.nope: no such service"),
    ("services: {a: {image: busybox, ports: ['8080:80']}, b: {image: busybox, "
     "ports: ['8080:81']}}",
     "compose.yaml: services.b.ports[0]: host port 8080/tcp is already published by "
     "services.a.ports"),
    ("services: {a: {image: busybox, container_name: fixed, deploy: {replicas: 2}}}",
     "compose.yaml: services.a.container_name: a fixed name can't be given to 2 replicas"),
    ("services: {a: {image: busybox, ports: ['70000:80']}}",
     "compose.yaml: services.a.ports[0]: port 70000 out of range 1-65535"),
    ("services: {a: {image: busybox, healthcheck: {test: true, interval: soon}}}",
     "compose.yaml: services.a.healthcheck.test: expected a list of strings"),
    ("services: {a: {image: busybox, healthcheck: {test: x, interval: soon}}}",
     "compose.yaml: services.a.healthcheck.interval: expected a duration"),
    ("services: {a: {image: busybox, depends_on: {b: {condition: done}}}, "
     "b: {image: busybox}}",
     "compose.yaml: services.a.depends_on.b.condition: 'done': expected one of"),
    ("services: {a: {image: busybox, volumes: ['undeclared:/data']}}",
     "compose.yaml: services.a.volumes[0]: volume 'undeclared' is not declared"),
    ("services: {a: {image: 'x:${NOPE:?set NOPE}'}}",
     "compose.yaml: services.a.image: required variable NOPE is missing a value: set NOPE"),
    ("services: {a: {image: busybox, deploy: {update_config: {order: sideways}}}}",
     "compose.yaml: services.a.deploy.update_config.order: 'sideways': expected "
     "start-first or stop-first"),
    ("services: {a: {image: busybox}}\nsecrets: {}",
     "compose.yaml: secrets: unknown top-level key"),
    ("services: {a: {command: true}}", "compose.yaml: services.a: neither image nor build"),
    ("services: [a, b]", "compose.yaml: services: expected a mapping"),
    ("services: {a: {image: busybox\n", "compose.yaml: line"),
]


@pytest.mark.parametrize(("text", "want"), BAD, ids=[w.split(": ")[1] for _, w in BAD])
def test_bad_input_names_the_key_path(tmp_path: Path, text: str, want: str) -> None:
    with pytest.raises(CoveError) as e:
        _load(tmp_path, text)
    assert want in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_input_one_line_nothing_made(tmp_path: Path) -> None:
    """`cove up` of bad files and scale/rollout of a project that is not up: one line,
    exit 1, no project state written."""
    root = tmp_path / "root"
    d = tmp_path / "app"
    d.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cove(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", str(root),
                               *args], capture_output=True, text=True, cwd=str(d),
                              env=env, timeout=60)
    for text, want in BAD[:3]:
        (d / "compose.yaml").write_text(text)
        r = cove("up", "-d")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("cove: " + want), r.stderr
    (d / "compose.yaml").write_text("services: {web: {image: nosuch.invalid/none:1}}")
    r = cove("up", "-d")
    assert r.returncode == 1 and r.stderr.startswith(
        "cove: compose.yaml: services.web.image: nosuch.invalid/none:1"), r.stderr
    r = cove("scale", "web=-1")
    assert r.returncode == 1 and r.stderr.strip() == \
        "cove: project app: not up (run `cove up` first)", r.stderr
    assert not (root / "projects").exists() or not any((root / "projects").iterdir())
