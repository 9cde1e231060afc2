/* probe: one syscall-level attack step per sub-command, for tests/security.
 * Prints "ok <result>" (exit 0) or "err <errno>" (exit 1). Built static by the tests. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

static int done(long rc) {
    if (rc < 0) { printf("err %d\n", errno); return 1; }
    printf("ok %ld\n", rc); return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *c = argv[1];
    const char *a = argc > 2 ? argv[2] : "";
    const char *b = argc > 3 ? argv[3] : "";
    if (!strcmp(c, "open-w")) return done(open(a, O_WRONLY));
    if (!strcmp(c, "open-r")) return done(open(a, O_RDONLY));
    if (!strcmp(c, "write")) {
        int fd = open(a, O_WRONLY);
        if (fd < 0) return done(-1);
        return done(write(fd, b, strlen(b)));
    }
    if (!strcmp(c, "read")) {  /* bytes readable (up to 1 MiB) */
        int fd = open(a, O_RDONLY);
        if (fd < 0) return done(-1);
        static char buf[65536]; long n, t = 0;
        while ((n = read(fd, buf, sizeof buf)) > 0 && t < (1 << 20)) t += n;
        if (n < 0 && t == 0) return done(-1);
        return done(t);
    }
    if (!strcmp(c, "exe-overwrite")) {
        /* CVE-2019-5736: hold /proc/PID/exe, wait for it to exit, reopen for writing. */
        char p[64]; snprintf(p, sizeof p, "/proc/%s/exe", a);
        int fd = open(p, O_PATH);
        if (fd < 0) return done(-1);
        char target[256] = ""; readlink(p, target, sizeof target - 1);
        fprintf(stderr, "holding %s\n", target);
        int wfd = -1;
        for (int i = 0; i < 400; i++) {
            char q[64]; snprintf(q, sizeof q, "/proc/self/fd/%d", fd);
            wfd = open(q, O_WRONLY);
            if (wfd >= 0 || errno != ETXTBSY) break;
            usleep(25000);
        }
        return done(wfd);
    }
    if (!strcmp(c, "keyctl"))  /* KEYCTL_JOIN_SESSION_KEYRING */
        return done(syscall(SYS_keyctl, 1, "probe"));
    if (!strcmp(c, "add_key"))
        return done(syscall(SYS_add_key, "user", "probe", "x", 1, -3));
    if (!strcmp(c, "init_module"))
        return done(syscall(SYS_init_module, "\0\0\0\0", 4, ""));
    if (!strcmp(c, "finit_module")) {
        int fd = open("/bin/busybox", O_RDONLY);
        return done(syscall(SYS_finit_module, fd, "", 0));
    }
    if (!strcmp(c, "raw-socket")) return done(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(c, "vsock")) return done(socket(40, SOCK_STREAM, 0));
    if (!strcmp(c, "mount")) return done(mount("tmpfs", a, "tmpfs", 0, NULL));
    if (!strcmp(c, "unshare")) return done(unshare((int)strtol(a, NULL, 0)));
    if (!strcmp(c, "clone")) {  /* raw clone with flags; the child exits at once */
        long pid = syscall(SYS_clone, strtol(a, NULL, 0) | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return done(pid > 0 ? 0 : pid);
    }
    if (!strcmp(c, "personality"))
        return done(syscall(SYS_personality, strtoul(a, NULL, 0)));
    if (!strcmp(c, "ptrace")) return done(ptrace(PTRACE_ATTACH, atoi(a), 0, 0));
    if (!strcmp(c, "mkdir")) return done(mkdir(a, 0755));
    if (!strcmp(c, "chown")) return done(chown(a, atoi(b), atoi(b)));
    if (!strcmp(c, "sethostname")) return done(sethostname(a, strlen(a)));
    if (!strcmp(c, "kill")) return done(kill(atoi(a), atoi(b)));
    if (!strcmp(c, "chdir-ls")) {  /* chdir, then list ".." names */
        if (chdir(a) < 0) return done(-1);
        char buf[512]; if (!getcwd(buf, sizeof buf)) return done(-1);
        printf("cwd %s\n", buf); return done(0);
    }
    if (!strcmp(c, "syscall")) return done(syscall(strtol(a, NULL, 0), 0, 0, 0, 0, 0));
    return 2;
}
