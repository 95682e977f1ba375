/*
 * django — see include/django.h.
 */
#include "django.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "heads.h"
#include "log.h"

extern char **environ;

#define HEADER "migshim-django-target 1"
#define TARGET_MAX (16 << 20)   /* a target file over 16 MiB is refused      */
#define COMPUTE_TIMEOUT_MS 60000 /* django.setup() of a large project: seconds */

/*
 * The program the app's Python runs.  MigrationLoader(None) opens no
 * connection: with nothing applied, a squash stands in the graph in place
 * of what it replaces, which is what `migrate` records last.  The key:
 * every migrations folder (a new file changes its mtime), every migration
 * file, and the settings module (INSTALLED_APPS, MIGRATION_MODULES).
 */
static const char helper_py[] =
    "import os, sys\n"
    "proj = sys.argv[1]\n"
    "if proj and proj not in sys.path: sys.path.insert(0, proj)\n"
    "if not os.environ.get('DJANGO_SETTINGS_MODULE'):\n"
    "    import re\n"
    "    try:\n"
    "        with open(os.path.join(proj, 'manage.py')) as f:\n"
    "            m = re.search(r\"DJANGO_SETTINGS_MODULE['\\\"]\\s*,\\s*['\\\"]([\\w.]+)\", f.read())\n"
    "        if m: os.environ['DJANGO_SETTINGS_MODULE'] = m.group(1)\n"
    "    except OSError: pass\n"
    "import django\n"
    "django.setup()\n"
    "from django.apps import apps\n"
    "from django.db.migrations.loader import MigrationLoader\n"
    "loader = MigrationLoader(None, ignore_no_migrations=True)\n"
    "nodes = sorted(loader.graph.nodes)\n"
    "files, dirs = set(), set()\n"
    "for mig in loader.disk_migrations.values():\n"
    "    f = getattr(sys.modules.get(type(mig).__module__), '__file__', None)\n"
    "    if f: files.add(os.path.abspath(f))\n"
    "for ac in apps.get_app_configs():\n"
    "    name, _ = loader.migrations_module(ac.label)\n"
    "    m = sys.modules.get(name) if name else None\n"
    "    for d in getattr(m, '__path__', None) or []: dirs.add(os.path.abspath(d))\n"
    "sm = sys.modules.get(os.environ.get('DJANGO_SETTINGS_MODULE', ''))\n"
    "if getattr(sm, '__file__', None): files.add(os.path.abspath(sm.__file__))\n"
    "out = ['" HEADER "']\n"
    "for d in sorted(dirs):\n"
    "    if '\\n' not in d: out.append('dir %d %s' % (os.stat(d).st_mtime_ns, d))\n"
    "for f in sorted(files):\n"
    "    if '\\n' in f: continue\n"
    "    st = os.stat(f)\n"
    "    out.append('file %d %d %s' % (st.st_mtime_ns, st.st_size, f))\n"
    "for a, n in nodes: out.append('node %s %s' % (a, n))\n"
    "out.append('end %d' % len(nodes))\n"
    "sys.stdout.flush()\n"
    "sys.stdout.write('\\n'.join(out) + '\\n')\n";

/* --- the target file ------------------------------------------------------------- */

static bool key_matches(const char *path, long long mtime_ns, long long size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    long long m = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return m == mtime_ns && (size < 0 || (long long)st.st_size == size);
}

/* A node's field: letters, digits, underscore (Python identifiers; app
 * labels and migration module names are both). */
static bool name_ok(const char *s, size_t len)
{
    if (len == 0 || len >= DJANGO_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
              (c >= 'A' && c <= 'Z') || c >= 0x80))
            return false;
    }
    return true;
}

int django_parse_target(const char *text, bool check_key, struct django_target *out, char *err,
                        size_t errsz)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    int line = 0;
    bool header = false, ended = false, stale = false;
    long long end_n = -1;
    for (const char *p = text; *p && !ended;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        line++;
        char buf[PATH_MAX + 128];
        if (len >= sizeof buf) {
            snprintf(err, errsz, "line %d: too long", line);
            goto bad;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        p = e ? e + 1 : p + len;
        if (!header) {
            if (strcmp(buf, HEADER) != 0) {
                snprintf(err, errsz, "line %d: not a migshim Django target (expected \"%s\")",
                         line, HEADER);
                goto bad;
            }
            header = true;
            continue;
        }
        long long a, b;
        int off = 0;
        if (strncmp(buf, "dir ", 4) == 0) {
            if (sscanf(buf + 4, "%lld %n", &a, &off) != 1 || !off || !buf[4 + off]) {
                snprintf(err, errsz, "line %d: malformed dir record", line);
                goto bad;
            }
            if (check_key && !stale && !key_matches(buf + 4 + off, a, -1)) {
                snprintf(err, errsz, "%s changed", buf + 4 + off);
                stale = true;
            }
        } else if (strncmp(buf, "file ", 5) == 0) {
            if (sscanf(buf + 5, "%lld %lld %n", &a, &b, &off) != 2 || !off || !buf[5 + off]) {
                snprintf(err, errsz, "line %d: malformed file record", line);
                goto bad;
            }
            if (check_key && !stale && !key_matches(buf + 5 + off, a, b)) {
                snprintf(err, errsz, "%s changed", buf + 5 + off);
                stale = true;
            }
        } else if (strncmp(buf, "node ", 5) == 0) {
            const char *app = buf + 5, *sp = strchr(app, ' ');
            if (!sp || !name_ok(app, (size_t)(sp - app)) || !name_ok(sp + 1, strlen(sp + 1))) {
                snprintf(err, errsz, "line %d: malformed node record", line);
                goto bad;
            }
            if (out->n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                struct django_node *nn = realloc(out->nodes, nc * sizeof *nn);
                if (!nn) {
                    snprintf(err, errsz, "out of memory");
                    goto bad;
                }
                out->nodes = nn;
                cap = nc;
            }
            struct django_node *nd = &out->nodes[out->n++];
            snprintf(nd->app, sizeof nd->app, "%.*s", (int)(sp - app), app);
            snprintf(nd->name, sizeof nd->name, "%s", sp + 1);
        } else if (strncmp(buf, "end ", 4) == 0) {
            if (sscanf(buf + 4, "%lld", &end_n) != 1) {
                snprintf(err, errsz, "line %d: malformed end record", line);
                goto bad;
            }
            ended = true;
        } else {
            snprintf(err, errsz, "line %d: unknown record", line);
            goto bad;
        }
    }
    if (!header) {
        snprintf(err, errsz, "empty");
        goto bad;
    }
    if (!ended || end_n != (long long)out->n) {
        snprintf(err, errsz, "truncated (no end record for %zu nodes)", out->n);
        goto bad;
    }
    if (stale) {
        django_target_free(out);
        return 0;
    }
    out->known = true;
    return 1;
bad:
    django_target_free(out);
    return -1;
}

void django_target_free(struct django_target *t)
{
    free(t->nodes);
    t->nodes = NULL;
    t->n = 0;
    t->known = false;
}

static char *read_text(const char *path, char *err, size_t errsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); /* a FIFO: no wait */
    if (fd < 0) {
        snprintf(err, errsz, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > TARGET_MAX) {
        snprintf(err, errsz, "not a regular file under %d bytes", TARGET_MAX);
        close(fd);
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    buf[got] = '\0';
    if (strlen(buf) != got) {
        free(buf);
        snprintf(err, errsz, "not a text file");
        return NULL;
    }
    return buf;
}

bool django_write_target(const char *path, const char *text, char *err, size_t errsz)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        return false;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    bool ok = done == len && close(fd) == 0;
    if (done != len)
        close(fd);
    if (ok && rename(tmp, path) != 0)
        ok = false;
    if (!ok) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return ok;
}

bool django_tool(const struct config *cfg, bool manage_py)
{
    if (cfg->tool != TOOL_AUTO)
        return cfg->tool == TOOL_DJANGO;
    if (heads_alembic_found(cfg))
        return false;
    const char *dsm = getenv("DJANGO_SETTINGS_MODULE");
    return (dsm && dsm[0]) || (manage_py && access("manage.py", R_OK) == 0);
}

/* --- where things are ---------------------------------------------------------------- */

void django_project_dir(char *out, size_t n)
{
    /* /proc/self/cmdline: argv[0] the interpreter, then options and the
     * script; `python3 /app/manage.py migrate` -> /app */
    char args[8192];
    size_t len = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, args, sizeof args - 1);
        len = r > 0 ? (size_t)r : 0;
        close(fd);
    }
    args[len] = '\0';
    for (size_t i = strlen(args) + 1; i < len; i += strlen(args + i) + 1) {
        const char *a = args + i;
        const char *base = strrchr(a, '/');
        if (strcmp(base ? base + 1 : a, "manage.py") == 0) {
            char real[PATH_MAX];
            if (realpath(a, real)) {
                snprintf(out, n, "%s", dirname(real));
                return;
            }
        }
    }
    if (!getcwd(out, n))
        snprintf(out, n, ".");
}

void django_target_path(const struct config *cfg, const char *project, char *out, size_t n)
{
    int w = cfg->django_target[0] ? snprintf(out, n, "%s", cfg->django_target)
                                  : snprintf(out, n, "%s/.migshim-django.target", project);
    if (w < 0 || (size_t)w >= n)
        out[0] = '\0'; /* too long: no file */
}

void django_cache_path(const char *project, char *out, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a of the project's path */
    for (const unsigned char *p = (const unsigned char *)project; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    snprintf(out, n, "/tmp/migshim-%ld/django-%016llx.target", (long)getuid(),
             (unsigned long long)h);
}

/* The cache folder: ours (owned by this user, 0700, not a link), made if
 * missing.  False when it cannot be trusted. */
static bool cache_dir_ok(const char *file)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return false;
    *slash = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return false;
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
           (st.st_mode & 077) == 0;
}

/* --- asking Python ----------------------------------------------------------------------- */

/* Does `path` resolve (symlinks followed) to the file `exe`? */
static bool resolves_to(const char *path, const char *exe)
{
    char real[PATH_MAX];
    return exe && exe[0] && realpath(path, real) && strcmp(real, exe) == 0;
}

/* The venv around an interpreter path: pyvenv.cfg beside it or one folder
 * up (as Python looks), written into `cfg`; false when there is none. */
static bool venv_of(const char *py, char *cfg, size_t n)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", py);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            return false;
        *slash = '\0';
        int w = snprintf(cfg, n, "%s/pyvenv.cfg", dir[0] ? dir : "");
        if (w > 0 && (size_t)w < n && access(cfg, R_OK) == 0)
            return true;
    }
    return false;
}

/* `p` (with a slash) as a path: itself when absolute or when `cwd` is
 * unknown, else against `cwd`.  False when it does not fit in `out`. */
static bool path_from(const char *cwd, const char *p, char *out, size_t n)
{
    int w = p[0] == '/' || !cwd ? snprintf(out, n, "%s", p) : snprintf(out, n, "%s/%s", cwd, p);
    return w > 0 && (size_t)w < n;
}

/* argv[0] as Python makes it its executable: with a slash, against `cwd`;
 * without, the first executable PATH entry.  False when there is none. */
static bool argv0_path(const struct django_python_facts *f, char *out, size_t n)
{
    const char *a = f->argv0;
    if (!a || !a[0])
        return false;
    if (strchr(a, '/'))
        return path_from(f->cwd, a, out, n);
    const char *p = f->path && f->path[0] ? f->path : "/usr/local/bin:/usr/bin:/bin";
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        int w = len ? snprintf(out, n, "%.*s/%s", (int)len, p, a)
                    : (f->cwd ? snprintf(out, n, "%s/%s", f->cwd, a) : -1);
        if (w > 0 && (size_t)w < n && access(out, X_OK) == 0)
            return true;
        p += len + (colon ? 1 : 0);
    }
    return false;
}

/* <dir>/bin/python3, else <dir>/bin/python: the first that is executable
 * and, with `exe`, resolves to it. */
static bool bin_python(const char *dir, const char *exe, char *out, size_t n)
{
    static const char *const names[] = {"python3", "python"};
    if (!dir || !dir[0])
        return false;
    for (size_t i = 0; i < 2; i++) {
        int w = snprintf(out, n, "%s/bin/%s", dir, names[i]);
        if (w > 0 && (size_t)w < n && access(out, X_OK) == 0 && (!exe || resolves_to(out, exe)))
            return true;
    }
    return false;
}

/* The path execve() ran, when it is the interpreter, or a script with the
 * interpreter beside it (a venv's bin/gunicorn): resolving to `exe`. */
static bool execfn_python(const struct django_python_facts *f, char *out, size_t n)
{
    const char *x = f->execfn;
    if (!x || !x[0])
        return false;
    char path[PATH_MAX];
    if (!path_from(f->cwd, x, path, sizeof path))
        return false;
    if (resolves_to(path, f->exe)) {
        snprintf(out, n, "%s", path);
        return true;
    }
    char *slash = strrchr(path, '/');
    if (!slash)
        return false;
    *slash = '\0';
    char *bin = strrchr(path, '/'); /* <dir>/bin: bin_python takes <dir> */
    if (!bin || strcmp(bin, "/bin") != 0)
        return false;
    *bin = '\0';
    return bin_python(path[0] ? path : "/", f->exe, out, n);
}

static bool is_python_name(const char *path)
{
    const char *base = strrchr(path, '/');
    return strncmp(base ? base + 1 : path, "python", 6) == 0;
}

void django_choose_python(const struct django_python_facts *f, char *out, size_t n, char *why,
                          size_t whysz)
{
    char cand[PATH_MAX], cfg[PATH_MAX + 16];
    if (f->configured && f->configured[0]) {
        snprintf(out, n, "%s", f->configured);
        snprintf(why, whysz, "django_python");
        return;
    }
    bool python = f->exe && f->exe[0] == '/' && is_python_name(f->exe);
    const char *how = NULL;
    if (python && argv0_path(f, cand, sizeof cand) && resolves_to(cand, f->exe))
        how = "argv[0] as invoked";
    else if (python && execfn_python(f, cand, sizeof cand))
        how = "the path execve ran (AT_EXECFN)";
    else if (python && bin_python(f->virtual_env, f->exe, cand, sizeof cand))
        how = "VIRTUAL_ENV";
    if (how) {
        snprintf(out, n, "%s", cand);
        if (venv_of(cand, cfg, sizeof cfg))
            snprintf(why, whysz, "%s; a virtualenv: %s", how, cfg);
        else
            snprintf(why, whysz, "%s; no virtualenv", how);
        return;
    }
    if (python) {
        snprintf(out, n, "%s", f->exe);
        snprintf(why, whysz, "this process's interpreter (argv[0] %s is not it)",
                 f->argv0 && f->argv0[0] ? f->argv0 : "empty");
        return;
    }
    if (bin_python(f->virtual_env, NULL, cand, sizeof cand))
        how = "VIRTUAL_ENV; this process is no Python";
    if (how) {
        snprintf(out, n, "%s", cand);
        snprintf(why, whysz, "%s", how);
        return;
    }
    snprintf(out, n, "python3");
    snprintf(why, whysz, "python3 from PATH; this process is no Python");
}

/* The facts for this process, and the pick. */
static void pick_python(const char *python, char *out, size_t n, char *why, size_t whysz)
{
    char exe[PATH_MAX] = "", args[PATH_MAX] = "", cwd[PATH_MAX];
    ssize_t r = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[r > 0 ? r : 0] = '\0';
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t got = read(fd, args, sizeof args - 1);
        args[got > 0 ? got : 0] = '\0'; /* argv[0]: up to its NUL */
        close(fd);
    }
    struct django_python_facts f = {
        .configured = python,
        .argv0 = args,
        .path = getenv("PATH"),
        .cwd = getcwd(cwd, sizeof cwd) ? cwd : NULL,
        .exe = exe,
        .virtual_env = getenv("VIRTUAL_ENV"),
        .execfn = (const char *)getauxval(AT_EXECFN),
    };
    django_choose_python(&f, out, n, why, whysz);
}

/* environ without the shim: LD_PRELOAD keeps every other library. */
static char **child_env(char *preload, size_t preload_sz)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0) {
            size_t p = (size_t)snprintf(preload, preload_sz, "LD_PRELOAD=");
            char *copy = strdup(environ[i] + 11), *save = NULL;
            for (char *t = copy ? strtok_r(copy, ": ", &save) : NULL; t;
                 t = strtok_r(NULL, ": ", &save))
                if (!strstr(t, "libmigshim") && p < preload_sz)
                    p += (size_t)snprintf(preload + p, preload_sz - p, "%s%s",
                                          preload[p - 1] == '=' ? "" : ":", t);
            free(copy);
            env[o++] = preload;
        } else if (strncmp(environ[i], "MIGSHIM_DISABLE=", 16) != 0) {
            env[o++] = environ[i];
        }
    }
    env[o++] = "MIGSHIM_DISABLE=1"; /* in case the shim is loaded some other way */
    env[o] = NULL;
    return env;
}

static double mono_ms(void) { return clock_now() * 1e3; }

/* The last non-empty line of `s` (Python's error: the traceback's last line). */
static void last_line(const char *s, char *out, size_t n)
{
    const char *end = s + strlen(s);
    while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    const char *start = end;
    while (start > s && start[-1] != '\n')
        start--;
    snprintf(out, n, "%.*s", (int)(end - start), start);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = '?';
}

char *django_compute(const char *python, const char *project, char *err, size_t errsz)
{
    char py[PATH_MAX], preload[8192], why[PATH_MAX + 64];
    pick_python(python, py, sizeof py, why, sizeof why);
    log_debug("Django target: listing the migrations with %s (%s)", py, why);
    int out[2], errp[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        return NULL;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        close(out[0]);
        close(out[1]);
        return NULL;
    }
    char **env = child_env(preload, sizeof preload);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    /* the app's signal mask and dispositions are not the helper's */
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {py, "-c", (char *)helper_py, (char *)project, NULL};
    pid_t pid = -1;
    int rc = env ? posix_spawnp(&pid, py, &fa, &at, argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(env);
    close(out[1]);
    close(errp[1]);
    if (rc != 0) {
        snprintf(err, errsz, "cannot run %s (%s): %s", py, why, strerror(rc));
        close(out[0]);
        close(errp[0]);
        return NULL;
    }
    /* read both pipes to EOF, within the timeout */
    char *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0}, cap[2] = {0, 0};
    struct pollfd pf[2] = {{out[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2;
    double deadline = mono_ms() + COMPUTE_TIMEOUT_MS;
    bool timed_out = false, oom = false;
    while (open_fds > 0) {
        double left = deadline - mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        int pr = poll(pf, 2, (int)left + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            if (cap[i] - len[i] < 4096) {
                size_t nc = cap[i] ? 2 * cap[i] : 16384;
                char *nb = nc <= TARGET_MAX ? realloc(buf[i], nc + 1) : NULL;
                if (!nb) {
                    oom = true;
                    timed_out = true;
                    break;
                }
                buf[i] = nb;
                cap[i] = nc;
            }
            ssize_t r = read(pf[i].fd, buf[i] + len[i], cap[i] - len[i]);
            if (r > 0) {
                len[i] += (size_t)r;
            } else if (r == 0 || errno != EINTR) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
            }
        }
        if (timed_out)
            break;
    }
    for (int i = 0; i < 2; i++) {
        if (pf[i].fd >= 0)
            close(pf[i].fd);
        if (buf[i])
            buf[i][len[i]] = '\0';
    }
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    /* ECHILD: the app reaps its children itself (SIGCHLD); the output's
     * end record is what counts */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    char *text = NULL;
    const char *h = buf[0] ? strstr(buf[0], HEADER "\n") : NULL;
    if (timed_out) {
        snprintf(err, errsz, oom ? "%s printed more than %d bytes" : "%s ran longer than %d s; killed", py,
                 oom ? TARGET_MAX : COMPUTE_TIMEOUT_MS / 1000);
    } else if (!h) {
        char last[256];
        last_line(buf[1] ? buf[1] : "", last, sizeof last);
        snprintf(err, errsz, "%s (%s) could not list the migrations: %s", py, why,
                 last[0] ? last : "no output");
    } else {
        text = strdup(h);
        if (!text)
            snprintf(err, errsz, "out of memory");
    }
    free(buf[0]);
    free(buf[1]);
    return text;
}

/* --- the shim's load ------------------------------------------------------------------------ */

/* Try one file: 1 used, 0 absent or stale (why in note), -1 malformed. */
static int try_file(const char *path, struct django_target *out, char *note, size_t notesz)
{
    char err[PATH_MAX + 64];
    if (access(path, F_OK) != 0)
        return 0;
    char *text = read_text(path, err, sizeof err);
    if (!text) {
        log_warn("%s: cannot read the Django target: %s; computing it again", path, err);
        return 0;
    }
    int r = django_parse_target(text, true, out, err, sizeof err);
    free(text);
    if (r < 0)
        log_warn("%s: %s; computing the Django target again", path, err);
    else if (r == 0)
        snprintf(note, notesz, "%.1000s is stale (%.2000s)", path, err);
    else
        snprintf(out->path, sizeof out->path, "%s", path);
    return r;
}

void django_load(const struct config *cfg, struct django_target *out)
{
    memset(out, 0, sizeof *out);
    char project[PATH_MAX], path[PATH_MAX], cache[PATH_MAX], note[PATH_MAX + 64] = "";
    django_project_dir(project, sizeof project);
    django_target_path(cfg, project, path, sizeof path);
    django_cache_path(project, cache, sizeof cache);
    if (try_file(path, out, note, sizeof note) == 1)
        return;
    if (!cfg->django_target[0] && try_file(cache, out, note, sizeof note) == 1)
        return;
    char err[512];
    double t0 = mono_ms();
    char *text = django_compute(cfg->django_python, project, err, sizeof err);
    if (!text) {
        log_warn("Django target unknown: %s; every process migrates in turn under the lock",
                 err);
        return;
    }
    char perr[256];
    if (django_parse_target(text, false, out, perr, sizeof perr) != 1) {
        log_warn("Django target unknown: the migration list is malformed (%s); every process "
                 "migrates in turn under the lock", perr);
        free(text);
        return;
    }
    /* cache it: the project's file when it may be written, else ours */
    char werr[PATH_MAX + 64];
    const char *where = path;
    if (!django_write_target(path, text, werr, sizeof werr)) {
        where = cache;
        if (cfg->django_target[0] || !cache_dir_ok(cache) ||
            !django_write_target(cache, text, werr, sizeof werr))
            where = NULL;
    }
    snprintf(out->path, sizeof out->path, "%s", where ? where : "(not cached)");
    /* silent when cached (the shim speaks when it acts); otherwise every
     * process pays the listing again: say so once per process */
    log_msg(where ? LOG_LVL_DEBUG : LOG_LVL_INFO,
            "Django target: %zu migrations, listed by Django in %.0f ms%s%s%s%s", out->n,
            mono_ms() - t0, note[0] ? "; " : "", note, where ? "; cached in " : "; not cached: ",
            where ? where : werr);
    free(text);
}

/* --- the read ----------------------------------------------------------------------------------- */

/* Append to a growing string; false when out of memory. */
struct sb {
    char *s;
    size_t len, cap;
    bool oom;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s) { sb_add(b, s, strlen(s)); }

/* `s` as an SQL literal E'...' (quotes and backslashes doubled). */
static void sb_literal(struct sb *b, const char *s)
{
    sb_str(b, "E'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'' || *p == '\\')
            sb_add(b, p, 1);
        sb_add(b, p, 1);
    }
    sb_str(b, "'");
}

char *django_read_expr(const struct django_target *t)
{
    struct sb q = {0}, e = {0};
    if (t->n == 0) /* nothing to migrate: always "all recorded" */
        return strdup("'<table/>'::text");
    /* the query, run by query_to_xml only when the table exists */
    sb_str(&q, "SELECT t.a OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) t.n AS version_num "
               "FROM (VALUES ");
    for (size_t i = 0; i < t->n; i++) {
        sb_str(&q, i ? ",(" : "(");
        sb_literal(&q, t->nodes[i].app);
        sb_str(&q, ",");
        sb_literal(&q, t->nodes[i].name);
        sb_str(&q, ")");
    }
    sb_str(&q, ") AS t(a, n) WHERE NOT EXISTS (SELECT 1 FROM django_migrations m "
               "WHERE m.app = t.a AND m.name = t.n) LIMIT 9");
    if (q.oom) {
        free(q.s);
        return NULL;
    }
    sb_str(&e, "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
               "JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace "
               "WHERE c.relname = 'django_migrations' AND c.relkind IN ('r', 'p') "
               "AND s.nspname = ANY (pg_catalog.current_schemas(false))) "
               "THEN pg_catalog.query_to_xml(");
    sb_literal(&e, q.s);
    sb_str(&e, ", false, false, '')::text END");
    free(q.s);
    if (e.oom) {
        free(e.s);
        return NULL;
    }
    return e.s;
}
