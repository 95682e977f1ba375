/*
 * Two libpq copies in one process, under LD_PRELOAD=libmigshim.so.
 *
 * Runs two_copies_helper (see tests/integration/c/) as a child with a
 * controlled environment and reads its stdout (query results) and stderr
 * (its "helper: <step>" markers interleaved with the shim's lines).  The
 * shim prints "migshim[PID]: debug: <fn> -> <soname> (first call)" the
 * first time an app call reaches each copy; from those lines and their
 * position between the markers the test proves which copy each call hit:
 *   - the app's PQconnectdb/PQexec   -> libpq.so.5
 *   - the module's PQconnectdb       -> libpqcopy.so.5
 *   - the app's PQexec on the module's PGconn -> libpqcopy.so.5
 *
 * Needs a server: PGHOST/PGPORT/PGUSER/PGDATABASE (tests/harness/with-pg.sh).
 * Paths are found from this binary's own location:
 *   $(B)/tests/integration/test_two_copies
 *   $(B)/tests/two_copies_helper, $(B)/tests/libcopymod.so, $(B)/libmigshim.so
 */
#include <criterion/criterion.h>

/* cr_assert_str_eq that shows both strings when it fails. */
#define ASSERT_STR(got, want)                                                                   \
    do {                                                                                        \
        const char *got_ = (got), *want_ = (want);                                              \
        cr_assert_str_eq(got_, want_, "got:  \"%s\"\nwant: \"%s\"", got_, want_);                \
    } while (0)

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char helper[PATH_MAX], module[PATH_MAX], shim[PATH_MAX];
static char workdir[PATH_MAX], emptyconf[PATH_MAX + 32];

static void resolve_path(char *out, const char *dir, const char *rel)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    cr_assert_not_null(realpath(p, out), "%s: %s (run 'make tests' first)", p, strerror(errno));
}

static void setup(void)
{
    cr_assert(getenv("PGHOST") || getenv("PGPORT"),
              "needs a server: run under tests/harness/with-pg.sh (PGHOST/PGPORT unset)");
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(n, 0);
    self[n] = '\0';
    char *dir = dirname(self); /* $(B)/tests/integration */
    resolve_path(helper, dir, "../two_copies_helper");
    resolve_path(module, dir, "../libcopymod.so");
    resolve_path(shim, dir, "../../libmigshim.so");

    /* an empty directory to run in (no ./migshim.conf, no alembic.ini) and
     * an empty configuration file (so /etc/migshim.conf is not read) */
    const char *t = getenv("TMPDIR");
    snprintf(workdir, sizeof workdir, "%s/migshim-two-copies.XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(workdir));
    snprintf(emptyconf, sizeof emptyconf, "%s/empty.conf", workdir);
    int fd = open(emptyconf, O_WRONLY | O_CREAT | O_EXCL, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void teardown(void)
{
    char p[PATH_MAX + 32];
    static const char *const files[] = {"empty.conf", "out", "err"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", workdir, files[i]);
        unlink(p);
    }
    if (workdir[0])
        rmdir(workdir);
}

TestSuite(two_copies, .init = setup, .fini = teardown, .timeout = 120);

/* --- running the helper ------------------------------------------------------ */

/* The ASan runtime this binary runs with, if any (SANITIZE=address): a
 * sanitized shim must be preloaded behind it, or the helper dies at start. */
static int find_asan(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    if (info->dlpi_name && strstr(info->dlpi_name, "/libasan.so")) {
        snprintf(arg, PATH_MAX, "%s", info->dlpi_name);
        return 1;
    }
    return 0;
}

/* "LD_PRELOAD=[libasan ]libmigshim.so" (static storage). */
static char *preload_var(void)
{
    static char var[2 * PATH_MAX + 16];
    char asan[PATH_MAX] = "";
    dl_iterate_phdr(find_asan, asan);
    snprintf(var, sizeof var, "LD_PRELOAD=%s%s%s", asan, asan[0] ? " " : "", shim);
    return var;
}

struct run {
    pid_t pid;
    int status;     /* as from waitpid */
    char out[8192]; /* its stdout */
    char err[32768]; /* its stderr */
};

/* The environment: ours minus LD_PRELOAD and every MIGSHIM_* variable
 * (a harness's MIGSHIM_TEST_* would be an unknown variable to the shim),
 * plus `extra` (NULL-terminated). */
static char **child_env(char *const *extra)
{
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    size_t m = 0;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 2, sizeof *env);
    cr_assert_not_null(env);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0 || strncmp(environ[i], "MIGSHIM_", 8) == 0)
            continue;
        if (strncmp(environ[i], "ASAN_OPTIONS=", 13) == 0)
            continue;
        env[k++] = environ[i];
    }
    for (size_t i = 0; i < m; i++)
        env[k++] = extra[i];
    /* a sanitized shim is preloaded ahead of the runtime: let ASan accept that */
    static char asan[512];
    const char *a = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%sverify_asan_link_order=0", a ? a : "",
             a && *a ? ":" : "");
    env[k++] = asan;
    env[k] = NULL;
    return env;
}

static void slurp(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(fd);
}

/* Run the helper with `extra` added to the environment, wait (60 s at
 * most), collect its output. */
static void run_helper(struct run *r, char *const *extra)
{
    char outp[PATH_MAX + 8], errp[PATH_MAX + 8];
    snprintf(outp, sizeof outp, "%s/out", workdir);
    snprintf(errp, sizeof errp, "%s/err", workdir);
    char **env = child_env(extra);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || chdir(workdir) != 0)
            _exit(126);
        char *argv[] = {helper, module, NULL};
        execve(helper, argv, env);
        _exit(127);
    }
    free(env);
    r->pid = pid;
    int st = 0;
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    for (int i = 0;; i++) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        cr_assert_eq(w, 0, "waitpid: %s", strerror(errno));
        if (i == 6000) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            slurp(errp, r->err, sizeof r->err);
            cr_assert_fail("helper did not finish in 60 s; stderr:\n%s", r->err);
        }
        nanosleep(&ten_ms, NULL);
    }
    r->status = st;
    slurp(outp, r->out, sizeof r->out);
    slurp(errp, r->err, sizeof r->err);
}

/* Offset of the line that is exactly `line` (no newline) in `text`, or -1;
 * asserts it occurs at most once. */
static long line_at(const char *text, const char *line)
{
    size_t len = strlen(line);
    long found = -1;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l == len && memcmp(p, line, len) == 0) {
            cr_assert_eq(found, -1, "line occurs twice: %s\nstderr:\n%s", line, text);
            found = p - text;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    return found;
}

/* The shim's line for `msg` in process `pid`. */
static const char *shim_line(pid_t pid, const char *level, const char *msg)
{
    static char buf[8][512];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, sizeof buf[0], "migshim[%ld]: %s: %s", (long)pid, level, msg);
    return b;
}

/* Assert that the lines appear in `text` in the given order (NULL ends). */
static void assert_order(const char *text, ...)
{
    va_list ap;
    va_start(ap, text);
    long prev = -1;
    const char *prev_line = "(start)";
    for (const char *l = va_arg(ap, const char *); l; l = va_arg(ap, const char *)) {
        long at = line_at(text, l);
        cr_assert_geq(at, 0, "missing line: %s\nstderr:\n%s", l, text);
        cr_assert_gt(at, prev, "line '%s' comes before '%s'\nstderr:\n%s", l, prev_line, text);
        prev = at;
        prev_line = l;
    }
    va_end(ap);
}

static int count_substr(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static const char want_out[] = "sys: 42\n"
                               "mod: modconn\n"
                               "cross: modconn via main\n"
                               "sys2: sysconn\n";

static void assert_exit_0(const struct run *r)
{
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
              "helper: status 0x%x\nstdout:\n%s\nstderr:\n%s", r->status, r->out, r->err);
}

/* --- the tests ------------------------------------------------------------------ */

Test(two_copies, each_call_reaches_the_copy_that_made_its_connection)
{
    static struct run r;
    char cfg[PATH_MAX + 64];
    snprintf(cfg, sizeof cfg, "MIGSHIM_CONFIG=%s", emptyconf);
    char *preload = preload_var();
    char *extra[] = {preload, "MIGSHIM_LOG=debug", cfg, NULL};
    run_helper(&r, extra);
    assert_exit_0(&r);
    ASSERT_STR(r.out, want_out);

    pid_t p = r.pid;
    assert_order(r.err,
                 "helper: sys connect",
                 shim_line(p, "debug", "PQconnectdb -> libpq.so.5 (first call)"),
                 "helper: sys exec",
                 shim_line(p, "debug", "PQexec -> libpq.so.5 (first call)"),
                 "helper: dlopen",
                 "helper: mod connect",
                 shim_line(p, "debug", "PQconnectdb -> libpqcopy.so.5 (first call)"),
                 "helper: mod exec",
                 shim_line(p, "debug", "PQexecParams -> libpqcopy.so.5 (first call)"),
                 "helper: cross exec",
                 /* the main program's PQexec on the module's PGconn */
                 shim_line(p, "debug", "PQexec -> libpqcopy.so.5 (first call)"),
                 "helper: sys exec again",
                 "helper: finish mod",
                 shim_line(p, "debug", "PQfinish -> libpqcopy.so.5 (first call)"),
                 "helper: finish sys",
                 shim_line(p, "debug", "PQfinish -> libpq.so.5 (first call)"),
                 "helper: done",
                 NULL);
    /* nothing reached the system copy that belonged to the module's copy */
    cr_assert_eq(count_substr(r.err, "-> libpq.so.5 (first call)"), 3, "stderr:\n%s", r.err);
    cr_assert_eq(count_substr(r.err, "-> libpqcopy.so.5 (first call)"), 4, "stderr:\n%s", r.err);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "migshim[%ld]: error:", (long)p);
    cr_assert_null(strstr(r.err, prefix), "the shim reported an error:\n%s", r.err);
    cr_assert_null(strstr(r.err, "failed"), "stderr:\n%s", r.err);
}

Test(two_copies, without_preload_no_migshim_line)
{
    static struct run r;
    /* even with MIGSHIM_LOG=debug set: no shim, no line */
    char *extra[] = {"MIGSHIM_LOG=debug", NULL};
    run_helper(&r, extra);
    assert_exit_0(&r);
    ASSERT_STR(r.out, want_out);
    cr_assert_null(strstr(r.err, "migshim"), "stderr:\n%s", r.err);
    assert_order(r.err, "helper: sys connect", "helper: sys exec", "helper: dlopen",
                 "helper: mod connect", "helper: mod exec", "helper: cross exec",
                 "helper: sys exec again", "helper: finish mod", "helper: finish sys",
                 "helper: done", NULL);
}

Test(two_copies, disabled_shim_is_silent_pass_through)
{
    static struct run r;
    char cfg[PATH_MAX + 64];
    snprintf(cfg, sizeof cfg, "MIGSHIM_CONFIG=%s", emptyconf);
    char *preload = preload_var();
    char *extra[] = {preload, "MIGSHIM_LOG=debug", "MIGSHIM_DISABLE=1", cfg, NULL};
    run_helper(&r, extra);
    assert_exit_0(&r);
    ASSERT_STR(r.out, want_out);
    cr_assert_null(strstr(r.err, "migshim"), "stderr:\n%s", r.err);
}

Test(two_copies, bad_configuration_one_error_line_then_pass_through)
{
    static struct run r;
    char cfg[PATH_MAX + 64];
    snprintf(cfg, sizeof cfg, "MIGSHIM_CONFIG=%s", emptyconf);
    char *preload = preload_var();
    char *extra[] = {preload, "MIGSHIM_LOG=debug", "MIGSHIM_BOGUS=1", cfg, NULL};
    run_helper(&r, extra);
    assert_exit_0(&r);
    ASSERT_STR(r.out, want_out);
    assert_order(r.err, "helper: sys connect",
                 shim_line(r.pid, "error",
                           "MIGSHIM_BOGUS: unknown variable (see 'man migshim.conf' for the keys); "
                           "migshim is disabled for this process"),
                 "helper: sys exec", NULL);
    cr_assert_eq(count_substr(r.err, "migshim["), 1, "exactly one shim line:\n%s", r.err);
}

Test(two_copies, bad_configuration_under_strict_exits_78)
{
    static struct run r;
    char cfg[PATH_MAX + 64];
    snprintf(cfg, sizeof cfg, "MIGSHIM_CONFIG=%s", emptyconf);
    char *preload = preload_var();
    char *extra[] = {preload, "MIGSHIM_STRICT=yes", "MIGSHIM_LOG=loud", cfg, NULL};
    run_helper(&r, extra);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 78,
              "status 0x%x\nstderr:\n%s", r.status, r.err);
    ASSERT_STR(r.out, "");
    char want[1024];
    snprintf(want, sizeof want,
             "helper: sys connect\n"
             "migshim[%ld]: error: MIGSHIM_LOG: 'log' must be one of error, warn, info, debug, "
             "got 'loud'; exiting with status 78 (strict = true)\n",
             (long)r.pid);
    ASSERT_STR(r.err, want);
}
