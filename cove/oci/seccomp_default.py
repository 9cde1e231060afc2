"""The default seccomp profile: Docker's (moby profiles/seccomp/default.json) as data.

Semantics as Docker's: everything not listed fails with EPERM; a list of syscalls is
allowed outright; some only for a capability the container holds (mount, unshare,
setns... need CAP_SYS_ADMIN); without CAP_SYS_ADMIN, clone may not create namespaces
(an argument filter on its flags) and clone3, whose flags a filter cannot read, fails
with ENOSYS so that libc falls back to clone; personality only to the harmless
personas; no AF_VSOCK sockets. keyctl, add_key, request_key, kexec_load,
init_module... are never allowed. `default_profile(caps)` returns the OCI
`linux.seccomp` object for a container whose bounding set is `caps`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ALLOW = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit io_uring_enter
io_uring_register io_uring_setup ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr llistxattr
_llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap
mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync
munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat
openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect
poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx
symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

# Syscalls allowed only with a capability in the bounding set (Docker's "includes").
_BY_CAP: dict[str, list[str]] = {
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount",
                      "fsopen", "fspick", "lookup_dcookie", "mount", "mount_setattr",
                      "move_mount", "open_tree", "perf_event_open", "quotactl",
                      "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog",
                      "umount", "umount2", "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}

# Docker allows these from kernel 4.8 on (ptrace no longer bypasses seccomp there);
# ptrace of a process still needs the kernel's permission (same uid and dumpable, or
# CAP_SYS_PTRACE).
_PTRACE = ["process_vm_readv", "process_vm_writev", "ptrace"]

# Namespace flags that clone may not carry without CAP_SYS_ADMIN.
CLONE_NS_MASK = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_ENOSYS = 38

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
    "armv7l": ["SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390", "SCMP_ARCH_S390X"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}
_ARCH_SYSCALLS = {
    "x86_64": ["arch_prctl", "modify_ldt"],
    "aarch64": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
                "breakpoint", "cacheflush", "set_tls"],
    "armv7l": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
               "breakpoint", "cacheflush", "set_tls"],
    "s390x": ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
    "riscv64": ["riscv_flush_icache"],
}


def _allow(names: list[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def default_profile(caps: list[str], machine: str | None = None) -> dict[str, Any]:
    """Docker's default profile for a container whose bounding set is `caps`."""
    machine = machine or os.uname().machine
    have = set(caps)
    rules: list[dict[str, Any]] = [_allow(_ALLOW)]
    # personality: only PER_LINUX, PER_LINUX32, UNAME26 variants and the query.
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        rules.append(_allow(["personality"],
                            [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]))
    # No AF_VSOCK (40): it reaches the host's hypervisor services.
    rules.append(_allow(["socket"], [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]))
    rules.append(_allow(_PTRACE))
    if machine in _ARCH_SYSCALLS:
        rules.append(_allow(_ARCH_SYSCALLS[machine]))
    for cap, names in _BY_CAP.items():
        if cap in have:
            rules.append(_allow(names))
    if "CAP_SYS_ADMIN" not in have:
        # clone's flags are its first argument (second on s390).
        idx = 1 if machine.startswith("s390") else 0
        rules.append(_allow(["clone"], [{"index": idx, "value": CLONE_NS_MASK, "valueTwo": 0,
                                         "op": "SCMP_CMP_MASKED_EQ"}]))
        # clone3 passes its flags in memory, out of a filter's reach: make libc fall back.
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,  # EPERM
        "architectures": list(_ARCHES.get(machine, [])),
        "syscalls": rules,
    }


def wants_notify(sc: dict[str, Any]) -> bool:
    """Whether a profile has SCMP_ACT_NOTIFY rules (the runtime then serves the listener)."""
    return any(isinstance(r, dict) and r.get("action") == "SCMP_ACT_NOTIFY"
               for r in sc.get("syscalls") or [])
