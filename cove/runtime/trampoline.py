"""The last execve goes through a tiny sealed in-memory program (CVE-2019-5736).

Until its final execve, the container's process is the runtime: a forked Python, whose
/proc/self/exe is the host's interpreter. An image whose entrypoint is a script with
`#!/proc/self/exe` (or an ELF whose interpreter is that path) makes the kernel resolve
that link *during* our execve, and so run the host's interpreter inside the container;
a process in the container can then open /proc/<pid>/exe of it, keep the handle, and
reopen it for writing once it exits: the host's python is overwritten (as runc's own
binary was). runc answers with a sealed memfd copy of itself; copying and re-running
a 7 MB interpreter on every create/exec would double our start-up, so only the last
step is replaced: we execve this 200-byte static program from a sealed memfd, and it
execve()s the container's binary. From that moment /proc/self/exe is the memfd: the
worst `#!/proc/self/exe` can do is exec the trampoline again (a loop inside the
container, which ends when the arguments run out), and what it could write to is a
sealed anonymous file of its own.

The trampoline is x86_64 code (other machines exec directly, and keep the exposure):

    mov rax, [rsp]             ; argc
    cmp rax, 2
    jb fail                    ; `#!/proc/self/exe` re-ran us until argv ran out
    mov rdi, [rsp+8]           ; argv[0]: the path to run
    lea rsi, [rsp+16]          ; &argv[1]: its argv
    lea rdx, [rsp+rax*8+16]    ; envp
    mov eax, 59                ; execve
    syscall
fail:
    mov edi, 2
    lea rsi, [rip+msg]
    mov edx, msglen
    mov eax, 1                 ; write(2, msg)
    syscall
    mov edi, 127
    mov eax, 231               ; exit_group(127)
    syscall
"""

from __future__ import annotations

import os

from cove.sys import libc

_BASE = 0x400000
_MSG = b"cove-runtime: exec of the container process failed\n"


def _image() -> bytes:
    code = bytes.fromhex(
        "488b0424" "4883f802" "7216"  # argc < 2: run as an interpreter of itself: stop
        "488b7c2408" "488d742410" "488d54c410" "b83b000000" "0f05"
        "bf02000000")
    # lea rsi, [rip+disp32] comes next (7 bytes); the message follows the code.
    tail = bytes.fromhex("ba") + len(_MSG).to_bytes(4, "little") + bytes.fromhex(
        "b8010000000f05" "bf7f000000" "b8e7000000" "0f05")
    disp = len(tail)  # from the end of the lea to the message
    code += bytes.fromhex("488d35") + disp.to_bytes(4, "little") + tail + _MSG
    ehdr_size, phdr_size = 64, 56
    off = ehdr_size + 2 * phdr_size
    total = off + len(code)
    ehdr = (b"\x7fELF\x02\x01\x01" + bytes(9)
            + (2).to_bytes(2, "little") + (0x3E).to_bytes(2, "little")
            + (1).to_bytes(4, "little") + (_BASE + off).to_bytes(8, "little")
            + ehdr_size.to_bytes(8, "little") + bytes(8) + bytes(4)
            + ehdr_size.to_bytes(2, "little") + phdr_size.to_bytes(2, "little")
            + (2).to_bytes(2, "little") + bytes(6))
    load = ((1).to_bytes(4, "little") + (5).to_bytes(4, "little") + bytes(8)
            + _BASE.to_bytes(8, "little") * 2 + total.to_bytes(8, "little") * 2
            + (0x1000).to_bytes(8, "little"))
    stack = (0x6474E551).to_bytes(4, "little") + (6).to_bytes(4, "little") + bytes(48)
    return ehdr + load + stack + code


def make() -> int:
    """A sealed, close-on-exec memfd holding the trampoline, or -1 where there is none.
    Made before the container side loses the host's view (nothing to import later)."""
    if os.uname().machine != "x86_64":
        return -1
    try:
        fd = os.memfd_create("cove-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return -1
    img = _image()
    os.write(fd, img)
    libc.add_seals(fd, libc.F_SEAL_SEAL | libc.F_SEAL_SHRINK | libc.F_SEAL_GROW | libc.F_SEAL_WRITE)
    return fd


def execve(tramp_fd: int, exe: str, args: list[str], env: dict[str, str]) -> None:
    """execve `exe` through the trampoline; raises OSError as os.execve does."""
    if tramp_fd >= 0:
        try:
            os.execve(tramp_fd, [exe, *args], env)
        except OSError:
            pass  # memfds may not be executable here (vm.memfd_noexec): exec directly
    os.execve(exe, args, env)
