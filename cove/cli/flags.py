"""A small runc-style flag parser (argparse costs cove-runtime ~6 ms of start-up).

Flags take `--name value`, `--name=value` or Go's single-dash `-name value`; parsing
stops at the first positional argument or at `--`, as urfave/cli does for runc.
"""

from __future__ import annotations

from cove.errors import CoveError

# A flag spec: name -> kind ("bool", "str", "int", "list"); aliases map to names.
Spec = dict[str, str]


class Parsed:
    """The flags given, read by name and kind. Reading a name that is not in the verb's
    spec (or as another kind) is a bug in the caller, not bad input: it raises
    LookupError instead of quietly returning a default that no flag could set."""

    def __init__(self, spec: Spec | None = None) -> None:
        self.spec: Spec = spec or {}
        self.values: dict[str, object] = {}
        self.args: list[str] = []

    def _check(self, name: str, kind: str) -> None:
        got = self.spec.get(name)
        if got != kind:
            raise LookupError(f"--{name}: not a {kind} flag of this command "
                              f"({'not in its spec' if got is None else got})")

    def given(self, name: str) -> bool:
        """Whether --name was on the command line (not just defaulted)."""
        if name not in self.spec:
            raise LookupError(f"--{name}: not a flag of this command")
        return name in self.values

    def s(self, name: str, default: str = "") -> str:
        self._check(name, "str")
        v = self.values.get(name, default)
        return v if isinstance(v, str) else default

    def b(self, name: str) -> bool:
        self._check(name, "bool")
        return bool(self.values.get(name, False))

    def i(self, name: str, default: int = 0) -> int:
        self._check(name, "int")
        v = self.values.get(name, default)
        return v if isinstance(v, int) else default

    def lst(self, name: str) -> list[str]:
        self._check(name, "list")
        v = self.values.get(name)
        return v if isinstance(v, list) else []


def parse(argv: list[str], spec: Spec, aliases: dict[str, str] | None = None,
          where: str = "") -> Parsed:
    aliases = aliases or {}
    out = Parsed(spec)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.args.extend(argv[i + 1:])
            break
        if not a.startswith("-") or a == "-":
            out.args.extend(argv[i:])
            break
        name, eq, value = a.lstrip("-").partition("=")
        name = aliases.get(name, name)
        kind = spec.get(name)
        if kind is None:
            raise CoveError(f"{where}flag provided but not defined", a)
        if kind == "bool":
            if eq:
                if value not in ("true", "false", "1", "0"):
                    raise CoveError(f"invalid value {value!r} for flag -{name}",
                                    "expected true or false")
                out.values[name] = value in ("true", "1")
            else:
                out.values[name] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                raise CoveError(f"{where}flag needs an argument", f"-{name}")
            value = argv[i + 1]
            i += 1
        i += 1
        if kind == "int":
            try:
                out.values[name] = int(value)
            except ValueError:
                raise CoveError(f"invalid value {value!r} for flag -{name}",
                                "expected integer") from None
        elif kind == "list":
            lst = out.values.setdefault(name, [])
            assert isinstance(lst, list)
            lst.append(value)
        else:
            out.values[name] = value
    return out
