/* cove-runtime's native front: the short calls of a container's life without an
 * interpreter.
 *
 * Why: an engine calls its OCI runtime for every step of every container, and
 * containerd's runc shim makes nine short calls per pod besides the two creates
 * (start x2, kill, kill --all x2, delete x2, delete --force x2: bench/cri --calls).
 * Each is a fresh process, and CPython's own start-up (7.5-11 ms on the build VM, before
 * any of Cove's code runs) is longer than the whole of runc's call (3.5-6 ms). No Python
 * can win that race, so this front does the common, fully checkable case of those
 * calls itself, and hands every other call, unchanged, to the Python runtime
 * (COVE_PY_LAUNCHER, compiled in by cove/cli/launcher.py), which stays the one
 * authority on what a container is:
 *
 *   start ID            a created container (init alive, exec.fifo there) with no
 *                       poststart hook: open the fifo, wait for init's byte, unlink it
 *   kill ID [SIGNAL]    a live init, signalled through a pidfd (no pid reuse race)
 *   kill --all ID SIG   a stopped container whose cgroups hold no process: nothing to do
 *   delete [-f] ID      a stopped container with no poststop hook: its cgroups removed
 *                       (one rmdir each), then its state dir; with --force, an id that
 *                       does not exist (runc's quiet success)
 *
 * It knows a container only through the `native` file its create wrote last (the
 * container handler's, cgroupfs driver's; cove/runtime/native.py): init's pid and
 * start time and the cgroup directories. A container without that file (other
 * handlers, the systemd driver's, a restored one), any flag or case not listed, a
 * caller other than root, or anything unexpected before a change is made: the Python
 * runtime gets the call, with the same argv, and says what is wrong. The front never
 * prints an error of its own except where a change was already under way.
 *
 * Rules of the runtime's fast path apply: no allocation beyond the stack, no stdio.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef COVE_PY_LAUNCHER
#error "COVE_PY_LAUNCHER: the Python runtime's launcher, compiled in"
#endif

#define MAX_DIRS 32
#define PATH_SZ 4096

static char **g_argv;

/* The Python runtime, with the caller's argv: the answer to everything not handled. */
static void __attribute__((noreturn)) python(void)
{
    execv(COVE_PY_LAUNCHER, g_argv);
    static const char msg[] = "cove-runtime: cannot run " COVE_PY_LAUNCHER "\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to say */ }
    _exit(127);
}

/* A failure once a change is under way: one line, as the Python runtime words it. */
static void __attribute__((noreturn)) fail(const char *cid, const char *what, int err)
{
    char line[512];
    size_t n = 0;
    const char *parts[] = {"cove-runtime: container '", cid, "': ", what, ": ",
                           strerror(err), "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t l = strlen(parts[i]);
        if (n + l >= sizeof line)
            break;
        memcpy(line + n, parts[i], l);
        n += l;
    }
    if (write(2, line, n) < 0) { /* nothing more to say */ }
    _exit(1);
}

/* runc's id rule (cove/runtime/state.py check_id): letters, digits, _ + - . */
static int valid_id(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int join(char *out, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + 1 + lb + 1 > PATH_SZ)
        return -1;
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb + 1);
    return 0;
}

/* A whole small file, NUL-terminated; its length, or -1 (errno set). */
static ssize_t read_file(int dirfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == size - 1) { /* larger than we handle */
            close(fd);
            errno = EFBIG;
            return -1;
        }
    }
    close(fd);
    buf[n] = 0;
    return (ssize_t)n;
}

struct native {
    long pid;
    unsigned long long start;
    int systemd, prune, ndirs;
    char dirs[MAX_DIRS][PATH_SZ];
};

static int parse_u(const char *s, unsigned long long *out)
{
    unsigned long long v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (unsigned)(*s - '0');
    if (*s)
        return -1;
    *out = v;
    return 0;
}

/* The `native` file (cove/runtime/native.py): 0 when read whole and understood. */
static int load_native(int sdir, struct native *nv)
{
    static char buf[MAX_DIRS * 256 + 512];
    if (read_file(sdir, "native", buf, sizeof buf) < 0)
        return -1;
    memset(nv, 0, sizeof *nv);
    nv->pid = -1;
    nv->systemd = 1;
    int version = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *val = strchr(line, ' ');
        if (!val)
            return -1;
        *val++ = 0;
        unsigned long long u;
        if (!strcmp(line, "cove-native")) {
            version = !strcmp(val, "1");
        } else if (!strcmp(line, "pid")) {
            if (parse_u(val, &u) || u == 0 || u > 1u << 30)
                return -1;
            nv->pid = (long)u;
        } else if (!strcmp(line, "start")) {
            if (parse_u(val, &nv->start))
                return -1;
        } else if (!strcmp(line, "systemd")) {
            nv->systemd = strcmp(val, "0") != 0;
        } else if (!strcmp(line, "prune")) {
            nv->prune = !strcmp(val, "1");
        } else if (!strcmp(line, "dir")) {
            if (nv->ndirs == MAX_DIRS || val[0] != '/' || strlen(val) >= PATH_SZ)
                return -1;
            strcpy(nv->dirs[nv->ndirs++], val);
        } else {
            return -1; /* a newer writer: the Python runtime knows */
        }
    }
    return version && nv->pid > 0 ? 0 : -1;
}

/* Whether pid is still the container's init (start time as recorded, not a zombie):
 * 1, 0, or -1 when /proc says something we do not understand. */
static int alive(long pid, unsigned long long start)
{
    char path[64], buf[1024];
    int n = 0;
    long p = pid;
    char digits[24];
    do {
        digits[n++] = (char)('0' + p % 10);
        p /= 10;
    } while (p);
    strcpy(path, "/proc/");
    size_t l = strlen(path);
    while (n)
        path[l++] = digits[--n];
    strcpy(path + l, "/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return r == 0 || errno == ESRCH ? 0 : -1;
    buf[r] = 0;
    char *s = strrchr(buf, ')');
    if (!s || s[1] != ' ')
        return -1;
    s += 2;
    if (*s == 'Z' || *s == 'X')
        return 0;
    /* field 3 (state) is the first after ") "; field 22 (starttime) the 20th */
    for (int field = 0; field < 19; field++) {
        s = strchr(s, ' ');
        if (!s)
            return -1;
        s++;
    }
    unsigned long long st = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        st = st * 10 + (unsigned)(*s - '0');
    return st == start ? 1 : 0;
}

static int has_hook(int sdir, const char *quoted_kind)
{
    static char cfg[1 << 20];
    if (read_file(sdir, "config.json", cfg, sizeof cfg) < 0)
        return -1;
    return strstr(cfg, quoted_kind) != NULL;
}

/* The container's state dir, opened, and its `native` file read; else the Python
 * runtime. */
static int open_container(const char *root, const char *cid, struct native *nv)
{
    char path[PATH_SZ];
    if (!valid_id(cid) || join(path, root, cid))
        python();
    int sdir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (sdir < 0 || load_native(sdir, nv))
        python();
    return sdir;
}

static int do_start(const char *root, char **args, int n)
{
    if (n != 1 || args[0][0] == '-')
        python();
    const char *cid = args[0];
    struct native nv;
    int sdir = open_container(root, cid, &nv);
    if (alive(nv.pid, nv.start) != 1 || has_hook(sdir, "\"poststart\"") != 0)
        python();
    int fd = openat(sdir, "exec.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        python(); /* started, paused or stopped: the Python runtime says which */
    /* Opening the read end unblocks init's open for writing; then wait for its byte,
     * checking that init is still there (it may die before opening its end). */
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 100);
        if (r < 0 && errno != EINTR)
            fail(cid, "exec fifo", errno);
        if (r > 0) {
            char c;
            ssize_t got = read(fd, &c, 1);
            if (got == 1)
                break;
            if (got == 0)
                python(); /* init's end closed without a byte: another start had it */
            if (got < 0 && errno != EAGAIN && errno != EINTR)
                fail(cid, "exec fifo", errno);
        }
        if (alive(nv.pid, nv.start) != 1) {
            static const char pre[] = "cove-runtime: container '", post[] =
                "': init exited before start\n";
            if (write(2, pre, sizeof pre - 1) < 0 || write(2, cid, strlen(cid)) < 0 ||
                write(2, post, sizeof post - 1) < 0) { /* nothing more to say */ }
            _exit(1);
        }
    }
    close(fd);
    if (unlinkat(sdir, "exec.fifo", 0) && errno != ENOENT)
        fail(cid, "exec fifo", errno);
    return 0;
}

static const struct { const char *name; int num; } SIGNALS[] = {
    {"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"ILL", 4}, {"TRAP", 5}, {"ABRT", 6}, {"IOT", 6},
    {"BUS", 7}, {"FPE", 8}, {"KILL", 9}, {"USR1", 10}, {"SEGV", 11}, {"USR2", 12},
    {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15}, {"STKFLT", 16}, {"CHLD", 17}, {"CONT", 18},
    {"STOP", 19}, {"TSTP", 20}, {"TTIN", 21}, {"TTOU", 22}, {"URG", 23}, {"XCPU", 24},
    {"XFSZ", 25}, {"VTALRM", 26}, {"PROF", 27}, {"WINCH", 28}, {"IO", 29}, {"POLL", 29},
    {"PWR", 30}, {"SYS", 31},
};

/* "9", "KILL", "SIGKILL", "sigkill" (cove/runtime/signals.py); 0 for what the Python
 * runtime should parse (real-time names) or refuse. */
static int parse_signal(const char *s)
{
    unsigned long long v;
    if (!parse_u(s, &v))
        return v > 0 && v <= 64 ? (int)v : 0;
    char up[16];
    size_t l = strlen(s);
    if (l >= sizeof up)
        return 0;
    for (size_t i = 0; i <= l; i++)
        up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    const char *name = strncmp(up, "SIG", 3) ? up : up + 3;
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
        if (!strcmp(name, SIGNALS[i].name))
            return SIGNALS[i].num;
    return 0;
}

/* Whether every cgroup directory is gone or holds no process: 1, 0, or -1. */
static int cgroups_empty(const struct native *nv)
{
    for (int i = 0; i < nv->ndirs; i++) {
        char buf[64];
        int d = open(nv->dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d < 0) {
            if (errno == ENOENT)
                continue;
            return -1;
        }
        ssize_t r = read_file(d, "cgroup.procs", buf, sizeof buf);
        close(d);
        if (r < 0)
            return -1;
        if (r > 0)
            return 0;
    }
    return 1;
}

static int do_kill(const char *root, char **args, int n)
{
    int all = 0;
    const char *pos[2];
    int npos = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(args[i], "--all") || !strcmp(args[i], "-a"))
            all = 1;
        else if (args[i][0] == '-' || npos == 2)
            python();
        else
            pos[npos++] = args[i];
    }
    if (npos == 0)
        python();
    int sig = npos == 2 ? parse_signal(pos[1]) : SIGTERM;
    if (!sig)
        python();
    struct native nv;
    int sdir = open_container(root, pos[0], &nv);
    (void)sdir;
    if (all) {
        /* A stopped container's leftovers are the Python runtime's to freeze and kill;
         * with none left, runc's answer: success. */
        if (nv.systemd || alive(nv.pid, nv.start) != 0 || cgroups_empty(&nv) != 1)
            python();
        return 0;
    }
    int pfd = (int)syscall(SYS_pidfd_open, (pid_t)nv.pid, 0);
    if (pfd < 0 || alive(nv.pid, nv.start) != 1)
        python(); /* gone, or a kernel without pidfds */
    if (syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0) < 0)
        python();
    return 0;
}

static int do_delete(const char *root, char **args, int n)
{
    int force = 0;
    const char *cid = NULL;
    for (int i = 0; i < n; i++) {
        if (!strcmp(args[i], "--force") || !strcmp(args[i], "-f"))
            force = 1;
        else if (args[i][0] == '-' || cid)
            python(); /* other flags, or several ids */
        else
            cid = args[i];
    }
    if (!cid || !valid_id(cid))
        python();
    char path[PATH_SZ];
    if (join(path, root, cid))
        python();
    struct stat sb;
    if (force && lstat(path, &sb) && errno == ENOENT) {
        /* As runc: --force of a container that does not exist is no error (the shim's
         * clean-up after delete), unless the state root itself is missing or foreign. */
        if (lstat(root, &sb) || !S_ISDIR(sb.st_mode))
            python();
        return 0;
    }
    struct native nv;
    int sdir = open_container(root, cid, &nv);
    if (nv.systemd || alive(nv.pid, nv.start) != 0 || has_hook(sdir, "\"poststop\"") != 0)
        python();
    /* Only plain files in the state dir, or the Python runtime removes it. */
    int scan = dup(sdir);
    DIR *d = scan >= 0 ? fdopendir(scan) : NULL;
    if (!d)
        python();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(sdir, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) || S_ISDIR(sb.st_mode))
            python();
    }
    /* Each cgroup directory, empty once init is gone, by one rmdir (and the parent Cove
     * made, while empty: delete.py _rmdir_empty). A busy one: the Python runtime's
     * cgroup manager, which kills and waits. */
    for (int i = 0; i < nv.ndirs; i++) {
        if (rmdir(nv.dirs[i])) {
            if (errno == ENOENT)
                continue;
            python();
        }
        if (nv.prune) {
            char *slash = strrchr(nv.dirs[i], '/');
            if (slash && slash != nv.dirs[i]) {
                *slash = 0;
                (void)rmdir(nv.dirs[i]); /* other containers may still live there */
            }
        }
    }
    rewinddir(d);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "state.json"))
            continue;
        if (unlinkat(sdir, e->d_name, 0) && errno != ENOENT)
            fail(cid, e->d_name, errno);
    }
    closedir(d);
    if (unlinkat(sdir, "state.json", 0) && errno != ENOENT)
        fail(cid, "state.json", errno);
    if (rmdir(path) && errno != ENOENT)
        fail(cid, "state dir", errno);
    return 0;
}

int main(int argc, char **argv)
{
    g_argv = argv;
    const char *env = getenv("COVE_RUNTIME_NATIVE");
    if (geteuid() != 0 || (env && !strcmp(env, "0")))
        python();
    const char *root = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--root") || !strcmp(a, "--log") || !strcmp(a, "--log-format")) {
            if (i + 1 >= argc)
                python();
            if (a[2] == 'r')
                root = argv[i + 1];
            i++;
        } else if (!strncmp(a, "--root=", 7)) {
            root = a + 7;
        } else if (strncmp(a, "--log=", 6) && strncmp(a, "--log-format=", 13) &&
                   strcmp(a, "--systemd-cgroup")) {
            python(); /* --debug, --rootless, --help, ... */
        }
    }
    if (!root || root[0] != '/' || i >= argc)
        python();
    const char *verb = argv[i];
    char **args = argv + i + 1;
    int n = argc - i - 1;
    if (!strcmp(verb, "start"))
        return do_start(root, args, n);
    if (!strcmp(verb, "kill"))
        return do_kill(root, args, n);
    if (!strcmp(verb, "delete"))
        return do_delete(root, args, n);
    python();
}
