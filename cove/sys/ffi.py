"""The few names of `ctypes` that cove-runtime's path uses, straight from `_ctypes`.

`import ctypes` costs ~1.5-2 ms of every cove-runtime start: its __init__ builds some
forty types, function-pointer caches and endian-swapped structure classes, and imports
`types`, `struct` and `ctypes._endian`. What the runtime needs (a handle on libc and
libseccomp, a dozen scalar types, Structure, POINTER, byref, string buffers) is all
in the C module `_ctypes`, which `ctypes` itself is a thin layer over; here are those
names, defined as `ctypes` defines them (each scalar type a direct subclass of
`_SimpleCData` with the same type code, so that results convert to Python values the
same way). Objects of these types and of `ctypes`' own mix freely in calls without
`argtypes` (both are `_ctypes` data); where `argtypes` name a type, pass that type.

For the type checker these are `ctypes`' own names.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import (
        CDLL,
        POINTER,
        PyDLL,
        Structure,
        addressof,
        byref,
        c_char,
        c_char_p,
        c_int,
        c_long,
        c_short,
        c_size_t,
        c_ssize_t,
        c_uint,
        c_uint8,
        c_uint16,
        c_uint32,
        c_uint64,
        c_ulong,
        c_ushort,
        c_void_p,
        create_string_buffer,
        get_errno,
        sizeof,
    )
else:
    from _ctypes import (
        FUNCFLAG_CDECL,
        FUNCFLAG_PYTHONAPI,
        FUNCFLAG_USE_ERRNO,
        POINTER,
        RTLD_LOCAL,
        CFuncPtr,
        Structure,
        _SimpleCData,
        addressof,
        byref,
        dlopen,
        get_errno,
        sizeof,
    )

    class c_char(_SimpleCData):
        _type_ = "c"

    class c_char_p(_SimpleCData):
        _type_ = "z"

    class c_void_p(_SimpleCData):
        _type_ = "P"

    class c_short(_SimpleCData):
        _type_ = "h"

    class c_ushort(_SimpleCData):
        _type_ = "H"

    class c_int(_SimpleCData):
        _type_ = "i"

    class c_uint(_SimpleCData):
        _type_ = "I"

    class c_long(_SimpleCData):
        _type_ = "l"

    class c_ulong(_SimpleCData):
        _type_ = "L"

    class c_ubyte(_SimpleCData):
        _type_ = "B"

    # LP64 (Linux on 64-bit machines), as ctypes aliases them there.
    c_uint8 = c_ubyte
    c_uint16 = c_ushort
    c_uint32 = c_uint
    c_uint64 = c_ulong
    c_size_t = c_ulong
    c_ssize_t = c_long

    def create_string_buffer(init, size=None):
        """ctypes.create_string_buffer: a c_char array, from bytes or a size."""
        if isinstance(init, bytes):
            buf = (c_char * (len(init) + 1 if size is None else size))()
            buf.value = init
            return buf
        return (c_char * init)()

    class CDLL:
        """ctypes.CDLL: a shared library (None: the program and libc), its functions
        as attributes, returning int unless `restype` says otherwise."""

        _func_flags_ = FUNCFLAG_CDECL

        def __init__(self, name, mode=RTLD_LOCAL, use_errno=False):
            self._name = name
            self._handle = dlopen(name, mode)
            flags = self._func_flags_ | (FUNCFLAG_USE_ERRNO if use_errno else 0)

            class _FuncPtr(CFuncPtr):
                _flags_ = flags
                _restype_ = c_int

            self._FuncPtr = _FuncPtr

        def __getattr__(self, name):
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            func = self._FuncPtr((name, self))
            func.__name__ = name
            setattr(self, name, func)
            return func

    class PyDLL(CDLL):
        """ctypes.PyDLL: functions called with the GIL held (for a raw fork: the child
        must not find the lock released by a thread that no longer exists)."""

        _func_flags_ = FUNCFLAG_CDECL | FUNCFLAG_PYTHONAPI

__all__ = ["CDLL", "POINTER", "PyDLL", "Structure", "addressof", "byref", "c_char", "c_char_p",
           "c_int", "c_long", "c_short", "c_size_t", "c_ssize_t", "c_uint", "c_uint8",
           "c_uint16", "c_uint32", "c_uint64", "c_ulong", "c_ushort", "c_void_p",
           "create_string_buffer", "get_errno", "sizeof"]
