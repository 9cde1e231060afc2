"""The v2 device filter program, built without the kernel."""

from __future__ import annotations

import struct

from cove.runtime.cgroups import devices_bpf as b
from cove.runtime.cgroups.v1 import device_rule


def _decode(prog: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(prog), 8):
        code, regs, off, imm = struct.unpack("<BBhi", prog[i : i + 8])
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def test_default_deny_then_allow() -> None:
    rules = [device_rule(r, "w") for r in (
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    )]
    assert rules == [(False, "a *:* rwm"), (True, "c 1:3 rwm")]
    insns = _decode(b.program(rules))
    # Prologue (6), the c 1:3 block (type, major, minor, mov, exit), then the
    # catch-all deny; nothing after it (the verifier refuses dead code).
    assert len(insns) == 6 + 5 + 2
    assert insns[6] == (b.JNE_K, 2, 0, 4, 2)  # type != char: skip 4
    assert insns[7] == (b.JNE_K, 4, 0, 3, 1)
    assert insns[8] == (b.JNE_K, 5, 0, 2, 3)
    assert insns[9] == (b.MOV64_K, 0, 0, 0, 1)
    assert insns[-2:] == [(b.MOV64_K, 0, 0, 0, 0), (b.EXIT, 0, 0, 0, 0)]


def test_partial_access_and_wildcards() -> None:
    insns = _decode(b.program([(True, "b *:* r")]))
    block = insns[6:-2]
    assert block[0] == (b.JNE_K, 2, 0, 5, 1)
    assert block[1:4] == [(b.MOV64_X, 1, 3, 0, 0), (b.AND32_K, 1, 0, 0, 2),
                          (b.JNE_X, 1, 3, 2, 0)]
    # No rule matched: deny.
    assert insns[-2:] == [(b.MOV64_K, 0, 0, 0, 0), (b.EXIT, 0, 0, 0, 0)]
