"""CRIU checkpoint/restore: the runtime's verbs and the engine's commands.

Debian's CRIU 3.17 does not work on this host's kernel (6.18: `criu check` fails on the
vDSO), so the tests that checkpoint run in the qemu VM of Debian's 6.1 kernel
(tests/criu/test_in_vm.py boots it, as the cgroup v2 tests do); on a host where CRIU
works they run directly, and elsewhere they skip (tests/lib/criu.py's `criu_broken`).
"""
