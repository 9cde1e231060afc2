"""The copy of a container's output from its FIFOs into its json-file log, exactly once
even when the monitor doing it is SIGKILLed at any instruction.

A plain `read` then `write` loses what was read when the monitor dies between the two
(the keeper keeps the pipe, not the monitor's memory). So the copy never consumes what
it has not stored:

1. peek: tee(2) the pipe's head into a scratch pipe and read that (the FIFO keeps it);
2. journal: in `<cdir>/log.journal`, a 64-byte file mapped shared (stores to it are
   memory writes, and they outlive the process): the log's inode and size before the
   write, the bytes to consume, the entries' length, the last byte to be consumed, and
   a marker set to anything but that byte; then the phase byte, 1;
3. append the entries to the log with one write;
4. consume: readv(2) the same bytes off the FIFO, the last of them into the journal's
   marker — the kernel's copy is the record that step 4 happened;
5. phase 0.

A new monitor, before it reads a FIFO, finishes what the journal says (`recover`):
phase 1 and the marker equal to the last byte: consumed, nothing to do; else, if the log
holds the whole write, consume the bytes now; if it holds part of it (a write cut
short by the kill), cut the log back and leave the bytes to be copied again; if none of
it, leave them. A partial line is left in the pipe until its newline, 16 KiB of it, or
its stream's end (docker's json-file splits lines the same way).
"""

from __future__ import annotations

import mmap
import os

from cove.engine import logs
from cove.sys import libc

PEEK = 1 << 16  # bytes a peek takes: the scratch pipe's size
SLOT = 32  # journal bytes a stream: phase, last, marker, pad; ino, size, n, blob length
STREAMS = ("stdout", "stderr")
JOURNAL = "log.journal"
ROUNDS = 16  # peeks an event takes at most before the monitor turns to other work


class Scratch:
    """The monitor's scratch pipe for peeks, and a buffer for the bytes it consumes."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.discard = memoryview(bytearray(PEEK))

    def peek(self, fd: int) -> bytes | None:
        """Up to PEEK bytes from the head of pipe `fd`, left there; b"" at its end (no
        writer and empty), None when it is empty but has writers."""
        try:
            n = libc.tee(fd, self.w, PEEK)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        parts, got = [], 0
        while got < n:
            part = os.read(self.r, n - got)
            parts.append(part)
            got += len(part)
        return b"".join(parts)


class Copier:
    """One container's copy: its log writer and its journal."""

    def __init__(self, cdir: str, writer: logs.JsonFileWriter, scratch: Scratch) -> None:
        self.writer, self.scratch = writer, scratch
        path = os.path.join(cdir, JOURNAL)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < SLOT * len(STREAMS):
                os.ftruncate(fd, SLOT * len(STREAMS))
            self.j = mmap.mmap(fd, SLOT * len(STREAMS))
        finally:
            os.close(fd)

    def close(self) -> None:
        self.writer.close()
        self.j.close()

    def _field(self, at: int, size: int) -> int:
        return int.from_bytes(self.j[at:at + size], "little")

    def _consume(self, fd: int, o: int, n: int) -> None:
        """Take `n` bytes (all in the pipe: we peeked them, nobody else reads) off the
        FIFO, the last of them into the journal's marker."""
        marker = memoryview(self.j)[o + 2:o + 3]
        try:
            os.readv(fd, [self.scratch.discard[:n - 1], marker])
        finally:
            marker.release()

    def recover(self, fd: int, stream: str) -> None:
        """Finish what a killed monitor left half done on this stream (see above)."""
        o = SLOT * STREAMS.index(stream)
        j = self.j
        if j[o] == 1 and j[o + 2] != j[o + 1]:
            ino, before = self._field(o + 8, 8), self._field(o + 16, 8)
            n, blen = self._field(o + 24, 4), self._field(o + 28, 4)
            try:
                st = os.stat(self.writer.path)
            except OSError:
                st = None
            if st is not None and st.st_ino == ino and st.st_size >= before + blen:
                self._consume(fd, o, n)
            elif st is not None and st.st_ino == ino and st.st_size > before:
                os.truncate(self.writer.path, before)
        j[o] = 0
        w = self.writer
        w.close()
        w._reopen()

    def pump(self, fd: int, stream: str, last: bool = False,
             rounds: int = ROUNDS) -> bool | None:
        """Copy what the FIFO holds: True once it has ended (no writer and empty), False
        when it is empty or holds a partial line, None when `rounds` peeks did not empty
        it (the caller comes back: one busy container must not starve the others). With
        `last` (its writers are gone, or the container is being finished) a partial line
        at the very end is copied too."""
        o = SLOT * STREAMS.index(stream)
        w = self.writer
        for _ in range(rounds):
            data = self.scratch.peek(fd)
            if data is None:
                return False
            if not data:
                return True
            items = w.entries(stream, data, last and len(data) < PEEK)
            if not items:
                return False  # a partial line: the rest comes with the next event
            # commits that fit the log's max-size, so that it rotates between entries
            done = i = 0
            while i < len(items):
                note = w.note()
                parts = [note, items[i][1]]
                try:
                    w.make_room(len(note) + len(items[i][1]))  # rotate if even one won't fit
                except OSError as e:
                    w.dropped(items[i][0] - done, e)
                    self._commit(fd, o, items[i][0] - done, data[items[i][0] - 1], None)
                    done, i = items[i][0], i + 1
                    continue
                room, total = w.room(), len(note) + len(items[i][1])
                i += 1
                while i < len(items) and (room < 0 or total + len(items[i][1]) <= room):
                    parts.append(items[i][1])
                    total += len(items[i][1])
                    i += 1
                end = items[i - 1][0]
                self._commit(fd, o, end - done, data[end - 1], b"".join(parts))
                done = end
        return None

    def _commit(self, fd: int, o: int, n: int, last: int, blob: bytes | None) -> None:
        """Journal, append `blob` (None: dropped already), consume `n` bytes, unjournal."""
        w, j = self.writer, self.j
        if blob is not None:
            try:
                j[o] = 0
                j[o + 1] = last
                j[o + 2] = last ^ 0xFF
                j[o + 8:o + 32] = (w.ino.to_bytes(8, "little") + w.size.to_bytes(8, "little")
                                   + n.to_bytes(4, "little") + len(blob).to_bytes(4, "little"))
                j[o] = 1
                w.append(blob)
            except OSError as e:
                w.dropped(n, e)
        else:
            j[o] = 0
            j[o + 1] = last
            j[o + 2] = last ^ 0xFF
        self._consume(fd, o, n)
        j[o] = 0
