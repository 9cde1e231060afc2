"""docker's detach keys (`--detach-keys`, default ctrl-p ctrl-q): their syntax, shared by
`cove attach`, a foreground `cove run -t` and the API's attach."""

from __future__ import annotations

from cove.errors import CoveError

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(keys: str) -> bytes:
    """docker's detach-key syntax: comma-separated `ctrl-<c>` (a-z, @, [, \\, ], ^, _)
    or single characters; "ctrl-p,ctrl-q" is b"\\x10\\x11"."""
    out = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            out.append(ord(key))
            continue
        c = key[5:].lower() if key.lower().startswith("ctrl-") and len(key) == 6 else ""
        if "a" <= c <= "z":
            out.append(ord(c) - ord("a") + 1)
        elif c in _CTRL:
            out.append(_CTRL[c])
        else:
            raise CoveError(f"--detach-keys {keys}", f"invalid detach key {key!r} (expected "
                            "ctrl-<a-z, @, [, \\, ], ^ or _> or a single character, "
                            "comma-separated)")
    if not out:
        raise CoveError(f"--detach-keys {keys}", "no keys given")
    return bytes(out)


class Matcher:
    """Finds the detach keys in a stream of input: `feed` returns what to pass on (a
    partial match is held back until the next byte settles it) and whether the keys
    were seen (what came after them is dropped)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""  # a prefix of the keys, not yet passed on

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            if b == self.keys[len(self.held)]:
                self.held += bytes([b])
                if self.held == self.keys:
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
            if b == self.keys[0]:
                self.held = bytes([b])
            else:
                out.append(b)
        return bytes(out), False
