"""`cove cdi list` and `cove cdi generate --nvidia`: the CDI devices `cove run --device
vendor.com/class=name` can use (docs/devices.md), and a spec for this host's NVIDIA
GPUs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cove.errors import CoveError


def cmd_list(a: argparse.Namespace) -> int:
    """Every device of the valid specs, one qualified name a line (with `--format
    json`: name and spec file); each invalid spec on stderr, naming the bad field.
    The exit status is 1 when a spec is invalid, so that scripts notice."""
    from cove.engine import cdi
    dirs = a.spec_dir or None
    reg = cdi.load(dirs)
    if a.format == "json":
        rows = [{"Name": n, "Spec": reg.devices[n][0].path if n in reg.devices else ""}
                for n in cdi.describe(reg)]
        print(json.dumps(rows, indent=2))
    else:
        for n in cdi.describe(reg):
            print(n)
    for name, files in sorted(reg.conflicts.items()):
        print(f"cove: CDI device {name}: claimed by two specs: {' and '.join(files)}",
              file=sys.stderr)
    for e in reg.errors:
        print(f"cove: {e}", file=sys.stderr)
    return 1 if reg.errors or reg.conflicts else 0


def cmd_generate(a: argparse.Namespace) -> int:
    """The spec as YAML on stdout, or into --output (JSON when the name ends .json);
    checked with the same parser `cove run` uses before it is written."""
    if not a.nvidia:
        raise CoveError("cdi generate", "say which devices: --nvidia")
    from cove.engine import cdi, cdi_nvidia
    spec = cdi_nvidia.generate(a.driver_root)
    out = a.output or "-"
    cdi.parse_spec(out, json.loads(json.dumps(spec)))
    if out.endswith(".json"):
        text = json.dumps(spec, indent=2) + "\n"
    else:
        import yaml
        text = yaml.safe_dump(spec, sort_keys=False)
    if out == "-":
        sys.stdout.write(text)
        return 0
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, out)
    except OSError as e:
        import contextlib
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CoveError(f"cdi generate --output {out}", e.strerror or str(e)) from None
    print(f"wrote {out}: nvidia.com/gpu, {len(spec['devices']) - 1} GPU(s)",
          file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("cdi", help="list and generate CDI device specs")
    ss = p.add_subparsers(dest="cdi_cmd", required=True, metavar="COMMAND")
    lp = ss.add_parser("list", help="the CDI devices specs define (vendor.com/class=name)")
    lp.add_argument("--format", choices=["table", "json"], default="table")
    lp.add_argument("--spec-dir", action="append", default=[],
                    help="read specs here instead of /etc/cdi and /var/run/cdi "
                         "(repeatable; later ones win)")
    lp.set_defaults(func=cmd_list)
    gp = ss.add_parser("generate", help="write a spec for this host's devices")
    gp.add_argument("--nvidia", action="store_true",
                    help="NVIDIA GPUs: device nodes, the driver's libraries and binaries")
    gp.add_argument("--output", "-o", help="file to write (- for stdout, the default; "
                                           "e.g. /var/run/cdi/nvidia.yaml)")
    gp.add_argument("--driver-root", default="/",
                    help="where the driver is installed (default /)")
    gp.set_defaults(func=cmd_generate)
