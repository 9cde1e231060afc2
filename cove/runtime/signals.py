"""Signal names and numbers without the `signal` module (it imports enum: ~3 ms)."""

from __future__ import annotations

from cove.errors import CoveError

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64


def parse_signal(s: str) -> int:
    """"9", "KILL", "SIGKILL", "sigkill", "RTMIN+3" -> number (runc's rules)."""
    if s.isdigit():
        n = int(s)
        if 0 < n <= SIGRTMAX:
            return n
        raise CoveError(f"signal {s!r}", "out of range")
    name = s.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in SIGNALS:
        return SIGNALS[name]
    for base, num in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if name == base:
            return num
        if name.startswith(base + "+") or name.startswith(base + "-"):
            off = name[len(base) + 1:]
            if off.isdigit():
                n = num + int(off) if name[len(base)] == "+" else num - int(off)
                if SIGRTMIN <= n <= SIGRTMAX:
                    return n
    raise CoveError(f"signal {s!r}", "unknown signal")
