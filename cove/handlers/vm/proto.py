"""The framing spoken over the VM's virtio-serial port and the monitor's control socket.

A frame is `chan:u32 kind:u8 len:u32` then `len` bytes. Channel 0 is the container's
process; an exec gets a channel of its own. Stdlib only: the guest agent imports it.
"""

from __future__ import annotations

import os
import struct

HDR = struct.Struct("!IBI")

HELLO = 1      # guest -> host: the agent is up
CONFIG = 2     # host -> guest: JSON (the guest bundle, the id, the network)
READY = 3      # guest -> host: JSON {"ok": true} or {"error": "..."} (create done)
START = 4      # host -> guest: release the process
STDIN = 5      # host -> guest: data; empty = EOF
STDOUT = 6     # guest -> host
STDERR = 7     # guest -> host
EXIT = 8       # guest -> host: JSON {"status": wait status}
SIGNAL = 9     # host -> guest: JSON {"signal": n}
EXEC = 10      # host -> guest (and ctl client -> monitor): JSON the process
PS = 11        # request / reply: JSON {"pids": [...]}
ERROR = 12     # any -> any: JSON {"error": "..."}
PAUSE = 13     # ctl client -> monitor
RESUME = 14    # ctl client -> monitor
RESIZE = 15    # host -> guest: JSON {"rows": h, "cols": w} for a process's terminal
UPDATE = 16    # ctl client -> guest: JSON linux.resources; reply READY {} or ERROR


def pack(chan: int, kind: int, data: bytes = b"") -> bytes:
    return HDR.pack(chan, kind, len(data)) + data


class Reader:
    """Splits a byte stream into frames."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= HDR.size:
            chan, kind, n = HDR.unpack_from(self.buf)
            if len(self.buf) < HDR.size + n:
                break
            out.append((chan, kind, self.buf[HDR.size:HDR.size + n]))
            self.buf = self.buf[HDR.size + n:]
        return out


def write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
