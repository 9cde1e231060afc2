"""Device rules on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

v2 has no devices.allow: the kernel asks an attached BPF program about every
device access.  The program built here scans the OCI rules last to first (a
later rule overrides an earlier one, as with v1's files) and denies what no
rule matches.  Only imported when a v2 host gets device rules (ctypes is slow
to import).
"""

from __future__ import annotations

import os
import struct

from cove.errors import CoveError

# bpf(2) commands, program/attach types and flags from <linux/bpf.h>.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = access << 16 | type.
DEV_TYPE = {"b": 1, "c": 2}
DEV_ACCESS = {"m": 1, "r": 2, "w": 4}

# Opcodes.
LDXW = 0x61  # dst = *(u32 *)(src + off)
AND32_K = 0x54
RSH32_K = 0x74
MOV64_K = 0xB7
MOV64_X = 0xBF
JNE_K = 0x55
JNE_X = 0x5D
EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _rule_block(allow: bool, rule: str) -> list[tuple[int, int, int, int, int]]:
    typ, nums, access = rule.split(" ")
    major, _, minor = nums.partition(":")
    # (code, dst, src, off, imm); off = -1 marks "jump past the end of this block".
    block: list[tuple[int, int, int, int, int]] = []
    if typ != "a":
        block.append((JNE_K, 2, 0, -1, DEV_TYPE[typ]))
    mask = sum(DEV_ACCESS[c] for c in set(access))
    if mask != 7:
        # Matches when the requested access is within the rule's.
        block += [(MOV64_X, 1, 3, 0, 0), (AND32_K, 1, 0, 0, mask), (JNE_X, 1, 3, -1, 0)]
    if major != "*":
        block.append((JNE_K, 4, 0, -1, int(major)))
    if minor != "*":
        block.append((JNE_K, 5, 0, -1, int(minor)))
    block += [(MOV64_K, 0, 0, 0, 1 if allow else 0), (EXIT, 0, 0, 0, 0)]
    n = len(block)
    return [(c, d, s, n - i - 1 if o == -1 else o, m) for i, (c, d, s, o, m) in enumerate(block)]


def program(rules: list[tuple[bool, str]]) -> bytes:
    """The BPF instructions for (allow, "type major:minor access") rules."""
    insns = [
        (LDXW, 2, 1, 0, 0), (AND32_K, 2, 0, 0, 0xFFFF),  # r2 = type
        (LDXW, 3, 1, 0, 0), (RSH32_K, 3, 0, 0, 16),  # r3 = access
        (LDXW, 4, 1, 4, 0),  # r4 = major
        (LDXW, 5, 1, 8, 0),  # r5 = minor
    ]
    for allow, rule in reversed(rules):
        block = _rule_block(allow, rule)
        insns += block
        if len(block) == 2:
            # Matches everything ("a *:* rwm"): the verifier rejects the
            # unreachable code that would follow.
            break
    else:
        insns += [(MOV64_K, 0, 0, 0, 0), (EXIT, 0, 0, 0, 0)]  # no rule matched: deny
    return b"".join(_insn(*i) for i in insns)


class _Bpf:
    def __init__(self) -> None:
        from cove.sys import ffi as ctypes  # ctypes' names without its start-up

        self.ct = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        nr = SYS_BPF.get(os.uname().machine)
        if nr is None:
            raise CoveError("linux.resources.devices", "bpf(2) number unknown on this machine")
        self.nr = nr

    def call(self, cmd: int, attr: bytes | bytearray, what: str) -> tuple[int, bytes]:
        buf = self.ct.create_string_buffer(bytes(attr), 128)
        r = self.libc.syscall(self.nr, cmd, buf, 128)
        if r < 0:
            e = self.ct.get_errno()
            raise CoveError("linux.resources.devices", f"{what}: {os.strerror(e)}")
        return r, buf.raw


def apply(cgroup_dir: str, rules: list[tuple[bool, str]], where: str) -> None:
    """Replace the cgroup's device program with one enforcing `rules`."""
    bpf = _Bpf()
    ct = bpf.ct
    code = ct.create_string_buffer(program(rules))
    lic = ct.create_string_buffer(b"Apache")
    log = ct.create_string_buffer(65536)
    attr = struct.pack(
        "<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(code.raw) // 8,
        ct.addressof(code), ct.addressof(lic), 1, len(log), ct.addressof(log), 0, 0,
        b"cove_devices", 0, BPF_CGROUP_DEVICE,
    )
    try:
        prog_fd, _ = bpf.call(BPF_PROG_LOAD, attr, "load device filter")
    except CoveError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise CoveError(where, f"{e.why} {' '.join(detail)}".strip()) from None
    cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = _attached(bpf, cg_fd)
        attr = struct.pack("<IIII", cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        try:
            bpf.call(BPF_PROG_ATTACH, attr, f"attach device filter to {cgroup_dir}")
        except CoveError as e:
            raise CoveError(where, e.why) from None
        # Only now drop the previous program, so no access slips through.
        for pid in old:
            _detach(bpf, cg_fd, pid)
    finally:
        os.close(cg_fd)
        os.close(prog_fd)


def _attached(bpf: _Bpf, cg_fd: int) -> list[int]:
    """IDs of the device programs attached directly to this cgroup."""
    ids = bpf.ct.create_string_buffer(4 * 64)
    attr = struct.pack("<IIIIQI", cg_fd, BPF_CGROUP_DEVICE, 0, 0, bpf.ct.addressof(ids), 64)
    _, out = bpf.call(BPF_PROG_QUERY, attr, "query device filters")
    cnt = struct.unpack_from("<I", out, 24)[0]
    return list(struct.unpack_from(f"<{cnt}I", ids.raw))


def _detach(bpf: _Bpf, cg_fd: int, prog_id: int) -> None:
    fd, _ = bpf.call(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id), "open old filter")
    try:
        bpf.call(BPF_PROG_DETACH, struct.pack("<III", cg_fd, fd, BPF_CGROUP_DEVICE),
                 "detach old filter")
    finally:
        os.close(fd)
