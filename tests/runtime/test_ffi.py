"""cove/sys/ffi.py: ctypes' names from _ctypes behave as ctypes' own (no root needed)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

from cove.sys import ffi
from tests.lib.paths import ROOT

SCALARS = ["c_char", "c_char_p", "c_int", "c_long", "c_short", "c_size_t", "c_ssize_t",
           "c_uint", "c_uint8", "c_uint16", "c_uint32", "c_uint64", "c_ulong", "c_ushort",
           "c_void_p"]


def test_scalar_types_match_ctypes() -> None:
    for name in SCALARS:
        mine, theirs = getattr(ffi, name), getattr(ctypes, name)
        assert mine._type_ == theirs._type_, name
        assert ffi.sizeof(mine) == ctypes.sizeof(theirs), name


def test_calls_results_errno_and_buffers() -> None:
    libc = ffi.CDLL(None, use_errno=True)
    assert libc.getpid() == os.getpid()
    libc.getenv.restype = ffi.c_char_p
    libc.getenv.argtypes = [ffi.c_char_p]
    assert libc.getenv(b"COVE_FFI_SURELY_UNSET") is None
    assert libc.close(-1) == -1 and ffi.get_errno() == 9  # EBADF
    buf = ffi.create_string_buffer(b"ab", 8)
    assert buf.raw == b"ab" + b"\0" * 6 and ffi.addressof(buf) != 0
    assert len(ffi.create_string_buffer(5).raw) == 5

    class Pair(ffi.Structure):
        _fields_ = [("a", ffi.c_uint32), ("b", ffi.c_uint64)]

    p = Pair(1, 2)
    assert (p.a, p.b) == (1, 2) and ffi.sizeof(p) == 16
    assert ffi.POINTER(Pair) is ffi.POINTER(Pair)
    assert ffi.byref(p) is not None


def test_the_runtime_path_never_imports_ctypes() -> None:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import cove.sys.libc, "
            "cove.runtime.seccomp, cove.runtime.create, cove.runtime.init; "
            "print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
