/*
 * heads — see include/heads.h.  The revision-file reader is a small line
 * scanner, not a Python parser: it looks only at module-level assignments
 * of `revision` and `down_revision`, skipping docstrings and comments, and
 * rejects what it does not understand rather than guessing.
 */
#include "heads.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envpy.h"
#include "ini.h"
#include "log.h"

#define FILE_MAX (1 << 20) /* a revision file larger than 1 MiB is refused */

/* --- reading files ------------------------------------------------------------ */

/* The whole text file at `path`, at most `max` bytes, malloc'ed and
 * NUL-terminated; NULL with `err` set when it cannot be opened, is no
 * regular file, is larger than `max` or holds a NUL byte (then not a text
 * file).  It is opened O_NONBLOCK and refused unless fstat says regular:
 * open(2) of a FIFO without a writer would wait for one forever, and a
 * revision file or alembic.ini that blocks must not stall the gate.
 *
 * Its buffer is sized from fstat: the file's size plus one byte (to see
 * the end in the same buffer) plus the terminator, grown (doubling, up to
 * max + 1) only when the file grows while read.
 * Never `max` bytes up front (only a file of that size gets such a
 * buffer): glibc serves a 1 MiB malloc by mmap, and
 * freeing it raises malloc's mmap threshold to 1 MiB and its trim
 * threshold to 2 MiB for the rest of the process, so the app's heap is
 * laid out differently after the gate read the scripts -- make bench
 * measured libpq's per-result block then carved out of a hole and merged
 * back on every PQclear: +211 instructions per statement of the app at
 * head (rows 1c, 1ch).  Each file is read in at most two read calls. */
static char *read_file(const char *path, size_t max, char *err, size_t errsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errsz, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
        snprintf(err, errsz, "not a regular file");
        close(fd);
        return NULL;
    }
    size_t want = (uintmax_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    bool oom = false;
    for (;;) {
        if (n == cap) {
            if (cap > max)
                break; /* max + 1 bytes read: too large */
            size_t ncap = !cap ? want : cap > max / 2 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                oom = true;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* the end, or an error: what was read is the text */
        n += (size_t)r;
    }
    close(fd);
    if (oom) {
        free(buf);
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    if (n > max) {
        free(buf);
        snprintf(err, errsz, "larger than %zu bytes", max);
        return NULL;
    }
    if (memchr(buf, '\0', n)) {
        free(buf);
        snprintf(err, errsz, "not a text file");
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* --- revision files ------------------------------------------------------------ */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\\')
        p += (*p == '\\' && p[1] == '\n') ? 2 : 1;
    return p;
}

/* Parse one string literal at p ('x', "x", optional r/u prefix); no
 * escapes are allowed in a revision id.  Returns the end or NULL. */
static const char *parse_str(const char *p, char *out, size_t outsz)
{
    if (*p == 'r' || *p == 'u' || *p == 'R' || *p == 'U')
        p++;
    char q = *p;
    if (q != '\'' && q != '"')
        return NULL;
    const char *s = ++p;
    while (*p && *p != q && *p != '\n' && *p != '\\')
        p++;
    if (*p != q || (size_t)(p - s) >= outsz || p == s)
        return NULL;
    memcpy(out, s, (size_t)(p - s));
    out[p - s] = '\0';
    return p + 1;
}

/* Skip white space, newlines and comments inside brackets. */
static const char *skip_ws_nl(const char *p, int *line)
{
    for (;;) {
        p = skip_ws(p);
        if (*p == '#') {
            while (*p && *p != '\n')
                p++;
        }
        if (*p != '\n')
            return p;
        (*line)++;
        p++;
    }
}

/* value := None | str | '(' [str {',' str} [',']] ')' | '[' ... ']' */
static const char *parse_value(const char *p, struct revfile *rf, bool is_down, int *line,
                               char *err, size_t errsz)
{
    char tmp[HEADS_REV_MAX];
    if (strncmp(p, "None", 4) == 0 && !isalnum((unsigned char)p[4]) && p[4] != '_') {
        if (!is_down) {
            snprintf(err, errsz, "revision must be a string, not None");
            return NULL;
        }
        return p + 4;
    }
    if (*p == '(' || *p == '[') {
        if (!is_down) {
            snprintf(err, errsz, "revision must be a single string");
            return NULL;
        }
        char close = *p == '(' ? ')' : ']';
        p = skip_ws_nl(p + 1, line);
        while (*p != close) {
            const char *e = parse_str(p, tmp, sizeof tmp);
            if (!e) {
                snprintf(err, errsz, "expected a quoted revision id in the down_revision list");
                return NULL;
            }
            void *nd = realloc(rf->down, (rf->ndown + 1) * sizeof *rf->down);
            if (!nd) {
                snprintf(err, errsz, "out of memory");
                return NULL;
            }
            rf->down = nd;
            memcpy(rf->down[rf->ndown++], tmp, sizeof tmp);
            p = skip_ws_nl(e, line);
            if (*p == ',')
                p = skip_ws_nl(p + 1, line);
            else if (*p != close) {
                snprintf(err, errsz, "expected ',' or '%c' in the down_revision list", close);
                return NULL;
            }
        }
        return p + 1;
    }
    const char *e = parse_str(p, tmp, sizeof tmp);
    if (!e) {
        snprintf(err, errsz, "%s must be a quoted revision id (at most %d characters)%s",
                 is_down ? "down_revision" : "revision", HEADS_REV_MAX - 1,
                 is_down ? ", None, or a tuple" : "");
        return NULL;
    }
    if (is_down) {
        rf->down = malloc(sizeof *rf->down);
        if (!rf->down) {
            snprintf(err, errsz, "out of memory");
            return NULL;
        }
        memcpy(rf->down[0], tmp, sizeof tmp);
        rf->ndown = 1;
    } else {
        memcpy(rf->revision, tmp, sizeof tmp);
    }
    return e;
}

/* If the line at p is `name [: annotation] = `, return the value's start. */
static const char *assignment(const char *p, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(p, name, n) != 0 || isalnum((unsigned char)p[n]) || p[n] == '_')
        return NULL;
    p = skip_ws(p + n);
    if (*p == ':') { /* annotation: skip to the first '=' at bracket depth 0 */
        int depth = 0;
        for (p++; *p && *p != '\n'; p++) {
            if (*p == '[' || *p == '(')
                depth++;
            else if (*p == ']' || *p == ')')
                depth--;
            else if (*p == '=' && depth == 0)
                break;
        }
    }
    if (*p != '=' || p[1] == '=')
        return NULL;
    return skip_ws(p + 1);
}

int heads_parse_revision(const char *text, struct revfile *out, int *errline, char *err,
                         size_t errsz)
{
    memset(out, 0, sizeof *out);
    bool have_rev = false, have_down = false;
    const char *triple = NULL; /* open docstring delimiter */
    int line = 1;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            eol = p + strlen(p);
        if (triple) { /* inside a docstring: look for its end on this line only
                       * (strstr on the rest of the text made an unterminated
                       * docstring quadratic: 14 s for a 1 MiB file) */
            const char *e = memmem(p, (size_t)(eol - p), triple, 3);
            if (e) {
                triple = NULL;
                p = e + 3;
                continue;
            }
        } else if (*p == '"' || *p == '\'' ||
                   ((*p == 'r' || *p == 'u') && (p[1] == '"' || p[1] == '\''))) {
            const char *q = (*p == 'r' || *p == 'u') ? p + 1 : p;
            if (strncmp(q, "\"\"\"", 3) == 0 || strncmp(q, "'''", 3) == 0) {
                const char *d = *q == '"' ? "\"\"\"" : "'''";
                const char *e = strstr(q + 3, d);
                if (!e) {
                    triple = d;
                } else if (e < eol) {
                    p = e + 3; /* one-line docstring: rest of the line */
                    continue;
                } else {
                    triple = d;
                }
            }
        } else {
            const char *v;
            bool is_down = false;
            if ((v = assignment(p, "revision")) || (is_down = true, v = assignment(p, "down_revision"))) {
                int start = line;
                if ((is_down && have_down) || (!is_down && have_rev)) {
                    /* a later assignment wins in Python; refuse the ambiguity */
                    snprintf(err, errsz, "%s assigned twice", is_down ? "down_revision" : "revision");
                    *errline = start;
                    heads_revfile_free(out);
                    return -1;
                }
                const char *e = parse_value(v, out, is_down, &line, err, errsz);
                if (e) {
                    e = skip_ws(e);
                    if (*e == ';') { /* `revision = "x"; down_revision = None` */
                        e = skip_ws(e + 1);
                        if (*e && *e != '\n' && *e != '#') {
                            if (is_down)
                                have_down = true;
                            else {
                                have_rev = true;
                                out->line = start;
                            }
                            p = e; /* the next statement of the line */
                            continue;
                        }
                    }
                    if (*e == '#')
                        while (*e && *e != '\n')
                            e++;
                    if (*e && *e != '\n') {
                        snprintf(err, errsz, "unexpected text after the %s value",
                                 is_down ? "down_revision" : "revision");
                        e = NULL;
                    }
                }
                if (!e) {
                    *errline = start;
                    heads_revfile_free(out);
                    return -1;
                }
                if (is_down)
                    have_down = true;
                else {
                    have_rev = true;
                    out->line = start;
                }
                /* parse_value may have consumed lines: continue after it */
                p = e;
                continue;
            }
        }
        if (!*eol)
            break;
        p = eol + 1;
        line++;
    }
    if (!have_rev) {
        heads_revfile_free(out);
        return 0;
    }
    if (!have_down) {
        snprintf(err, errsz, "revision '%s' has no down_revision", out->revision);
        *errline = out->line;
        heads_revfile_free(out);
        return -1;
    }
    return 1;
}

void heads_revfile_free(struct revfile *rf)
{
    free(rf->down);
    rf->down = NULL;
    rf->ndown = 0;
}

/* --- heads ----------------------------------------------------------------------- */

static int find_rev(const struct revfile *files, size_t n, const char *rev)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(files[i].revision, rev) == 0)
            return (int)i;
    return -1;
}

bool heads_compute(const struct revfile *files, size_t n, struct heads *out, char *err,
                   size_t errsz)
{
    out->revs = calloc(n ? n : 1, sizeof *out->revs);
    out->heads = calloc(n ? n : 1, sizeof *out->heads);
    bool *named = calloc(n ? n : 1, sizeof *named);
    if (!out->revs || !out->heads || !named) {
        free(named);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (find_rev(files, i, files[i].revision) >= 0) {
            snprintf(err, errsz, "revision '%s' is defined twice", files[i].revision);
            free(named);
            return false;
        }
        memcpy(out->revs[out->nrevs++], files[i].revision, HEADS_REV_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t d = 0; d < files[i].ndown; d++) {
            int j = find_rev(files, n, files[i].down[d]);
            if (j < 0) {
                snprintf(err, errsz, "revision '%s' names unknown down_revision '%s'",
                         files[i].revision, files[i].down[d]);
                free(named);
                return false;
            }
            named[j] = true;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!named[i])
            memcpy(out->heads[out->nheads++], files[i].revision, HEADS_REV_MAX);
    free(named);
    out->graph = true;
    out->known = out->nheads > 0;
    return true;
}

bool heads_has_rev(const struct heads *h, const char *rev)
{
    for (size_t i = 0; i < h->nrevs; i++)
        if (strcmp(h->revs[i], rev) == 0)
            return true;
    return false;
}

void heads_free(struct heads *h)
{
    free(h->revs);
    free(h->heads);
    memset(h, 0, sizeof *h);
}

/* --- finding the scripts ---------------------------------------------------------- */

char *heads_interpolate(const char *v, const char *here, char *err, size_t errsz)
{
    /* the exact size: every %(here)s becomes `here`, nothing else grows */
    size_t n = strlen(here), len = strlen(v), k = 0;
    for (const char *p = v; (p = strstr(p, "%(here)s")); p += 8)
        k++;
    if (n > 8 && k > (SIZE_MAX - len - 1) / (n - 8)) {
        snprintf(err, errsz, "value too long");
        return NULL;
    }
    size_t cap = len + 1 + (n > 8 ? k * (n - 8) : 0);
    char *out = malloc(cap), *o = out;
    if (!out) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    for (const char *p = v; *p;) {
        if (strncmp(p, "%(here)s", 8) == 0) {
            memcpy(o, here, n);
            o += n;
            p += 8;
        } else if (p[0] == '%' && p[1] == '%') {
            *o++ = '%';
            p += 2;
        } else if (p[0] == '%') {
            free(out);
            snprintf(err, errsz, "unsupported interpolation in '%s'", v);
            return NULL;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

/* Collect revision files under `dir` (recursively when asked). */
struct collect {
    struct revfile *files;
    size_t n, cap;
    bool broken;
};

static void collect_dir(const char *dir, bool recursive, struct collect *c, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("%s: cannot read the Alembic versions folder: %s; target heads unknown", dir,
                 strerror(errno));
        c->broken = true;
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "__pycache__") == 0)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (recursive && depth < 16)
                collect_dir(path, recursive, c, depth + 1);
            continue;
        }
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".py") != 0)
            continue;
        char err[256];
        char *text = read_file(path, FILE_MAX, err, sizeof err);
        if (!text) {
            log_warn("%s: cannot read this revision file: %s; target heads unknown", path, err);
            c->broken = true;
            continue;
        }
        struct revfile rf;
        int errline = 0;
        int r = heads_parse_revision(text, &rf, &errline, err, sizeof err);
        free(text);
        if (r < 0) {
            log_warn("%s:%d: %s; target heads unknown", path, errline, err);
            c->broken = true;
            continue;
        }
        if (r == 0)
            continue; /* a helper module, not a revision */
        if (c->n == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 32;
            void *nf = realloc(c->files, ncap * sizeof *c->files);
            if (!nf) {
                heads_revfile_free(&rf);
                c->broken = true;
                continue;
            }
            c->files = nf;
            c->cap = ncap;
        }
        c->files[c->n++] = rf;
    }
    closedir(d);
}

/* Split a version_locations value per version_path_separator. */
static void each_location(const char *value, const char *sep_key, bool recursive,
                          struct collect *c)
{
    const char *seps = " ,\n"; /* Alembic's legacy split */
    if (sep_key) {
        if (strcmp(sep_key, "os") == 0 || strcmp(sep_key, ":") == 0)
            seps = ":\n";
        else if (strcmp(sep_key, "space") == 0)
            seps = " \n";
        else if (strcmp(sep_key, ";") == 0)
            seps = ";\n";
        else if (strcmp(sep_key, "newline") == 0)
            seps = "\n";
    }
    char *copy = strdup(value), *save = NULL;
    if (!copy)
        return;
    for (char *tok = strtok_r(copy, seps, &save); tok; tok = strtok_r(NULL, seps, &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        if (*tok)
            collect_dir(tok, recursive, c, 0);
    }
    free(copy);
}

static bool truthy(const char *v)
{
    return v && (strcasecmp(v, "true") == 0 || strcasecmp(v, "1") == 0 ||
                 strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}

char *heads_pyproject_script_location(const char *text)
{
    bool in = false;
    for (const char *p = text; *p;) {
        const char *eol = p + strcspn(p, "\n");
        const char *s = p;
        while (s < eol && (*s == ' ' || *s == '\t'))
            s++;
        if (*s == '[')
            in = strncmp(s, "[tool.alembic]", 14) == 0;
        else if (in && strncmp(s, "script_location", 15) == 0) {
            /* script_location = "basic string" | 'literal string' */
            const char *q = s + 15;
            while (q < eol && (*q == ' ' || *q == '\t'))
                q++;
            if (q < eol && *q == '=') {
                q++;
                while (q < eol && (*q == ' ' || *q == '\t'))
                    q++;
                if (q < eol && (*q == '"' || *q == '\'')) {
                    const char *qe = memchr(q + 1, *q, (size_t)(eol - q - 1));
                    if (qe)
                        return strndup(q + 1, (size_t)(qe - q - 1));
                }
            }
        }
        p = *eol ? eol + 1 : eol;
    }
    return NULL;
}

/* Where the app's Alembic configuration is. */
struct location {
    char ini[PATH_MAX];        /* alembic.ini, migrations/alembic.ini, pyproject.toml */
    bool pyproject;
    char *script_location;
    char *version_locations, *sep, *recursive; /* raw values from the ini, or NULL */
};

static void location_free(struct location *l)
{
    free(l->script_location);
    free(l->version_locations);
    free(l->sep);
    free(l->recursive);
    memset(l, 0, sizeof *l);
}

/* Find the configuration the way Alembic (and Flask-Migrate) would.
 * False when there is none or it cannot be used: said in the log unless
 * `quiet` (the same search runs twice, for the heads and the env.py). */
static bool locate(const struct config *cfg, struct location *l, bool quiet)
{
    memset(l, 0, sizeof *l);
    bool flask_migrate = false;
    if (cfg->alembic_ini[0])
        snprintf(l->ini, sizeof l->ini, "%s", cfg->alembic_ini);
    else if (access("alembic.ini", R_OK) == 0)
        snprintf(l->ini, sizeof l->ini, "alembic.ini");
    else if (access("migrations/alembic.ini", R_OK) == 0) {
        snprintf(l->ini, sizeof l->ini, "migrations/alembic.ini");
        flask_migrate = true;
    }
#define SAY(...) do { if (!quiet) log_warn(__VA_ARGS__); } while (0)
    char err[256];
    char here[PATH_MAX];
    if (l->ini[0]) {
        char *text = read_file(l->ini, FILE_MAX, err, sizeof err);
        if (!text) {
            SAY("%s: cannot read the Alembic configuration: %s; target heads unknown", l->ini, err);
            return false;
        }
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", l->ini);
        snprintf(here, sizeof here, "%s", dirname(tmp));
        char *raw = ini_get(text, "alembic", "script_location");
        char *rawv = ini_get(text, "alembic", "version_locations");
        l->sep = ini_get(text, "alembic", "version_path_separator");
        l->recursive = ini_get(text, "alembic", "recursive_version_locations");
        free(text);
        if (raw) {
            l->script_location = heads_interpolate(raw, here, err, sizeof err);
            if (!l->script_location)
                SAY("%s: script_location: %s; target heads unknown", l->ini, err);
        } else if (flask_migrate || cfg->alembic_ini[0]) {
            l->script_location = strdup(here); /* Flask-Migrate: the ini's own folder */
        } else {
            SAY("%s: no script_location in [alembic]; target heads unknown", l->ini);
        }
        if (rawv) {
            l->version_locations = heads_interpolate(rawv, here, err, sizeof err);
            if (!l->version_locations)
                SAY("%s: version_locations: %s; target heads unknown", l->ini, err);
        }
        free(raw);
        bool ok = l->script_location && (!rawv || l->version_locations);
        free(rawv);
        if (!ok)
            return false;
    } else {
        char *text = access("pyproject.toml", R_OK) == 0
                         ? read_file("pyproject.toml", FILE_MAX, err, sizeof err)
                         : NULL;
        char *raw = text ? heads_pyproject_script_location(text) : NULL;
        free(text);
        if (!raw) {
            if (!quiet)
                log_debug("no alembic.ini, migrations/alembic.ini or [tool.alembic] found; "
                          "target heads unknown (the lock is taken at the first version-table statement)");
            return false;
        }
        snprintf(l->ini, sizeof l->ini, "pyproject.toml");
        l->pyproject = true;
        l->script_location = heads_interpolate(raw, ".", err, sizeof err);
        free(raw);
        if (!l->script_location) {
            SAY("pyproject.toml: script_location: %s; target heads unknown", err);
            return false;
        }
    }
    if (strchr(l->script_location, ':') && l->script_location[0] != '/') {
        SAY("%s: script_location '%s' names a package resource, which migshim cannot read; "
            "set MIGSHIM_HEADS; target heads unknown", l->ini, l->script_location);
        return false;
    }
#undef SAY
    return true;
}

static void load_from_scripts(const struct config *cfg, struct heads *out)
{
    struct location l;
    if (!locate(cfg, &l, false)) {
        location_free(&l);
        return;
    }
    char err[256];
    struct collect c = {0};
    if (l.version_locations) {
        each_location(l.version_locations, l.sep, truthy(l.recursive), &c);
        snprintf(out->where, sizeof out->where, "%s", l.version_locations);
    } else {
        char vdir[PATH_MAX];
        snprintf(vdir, sizeof vdir, "%s/versions", l.script_location);
        collect_dir(vdir, truthy(l.recursive), &c, 0);
        snprintf(out->where, sizeof out->where, "%s", vdir);
    }
    if (!c.broken) {
        if (!heads_compute(c.files, c.n, out, err, sizeof err)) {
            log_warn("%s: %s; target heads unknown", out->where, err);
            heads_free(out);
        } else if (!out->known) {
            log_debug("%s: no revision files; target heads unknown", out->where);
        }
    }
    for (size_t i = 0; i < c.n; i++)
        heads_revfile_free(&c.files[i]);
    free(c.files);
    location_free(&l);
}

bool heads_read_env_py(const struct config *cfg, struct envpy_vt *out, char *path, size_t pathsz)
{
    memset(out, 0, sizeof *out);
    path[0] = '\0';
    struct location l;
    bool found = false;
    if (locate(cfg, &l, true)) {
        char err[256];
        snprintf(path, pathsz, "%s/env.py", l.script_location);
        char *text = read_file(path, FILE_MAX, err, sizeof err);
        char *ini = l.pyproject ? NULL : read_file(l.ini, FILE_MAX, err, sizeof err);
        if (text) {
            envpy_read(text, ini, out);
            found = true;
        }
        free(text);
        free(ini);
    }
    location_free(&l);
    return found;
}

bool heads_alembic_found(const struct config *cfg)
{
    if (cfg->heads[0])
        return true;
    struct location l;
    bool found = locate(cfg, &l, true);
    location_free(&l);
    return found;
}

void heads_load(const struct config *cfg, struct heads *out)
{
    memset(out, 0, sizeof *out);
    if (!cfg->heads[0]) {
        load_from_scripts(cfg, out);
        return;
    }
    /* the heads key: comma-separated, no graph */
    size_t n = 1;
    for (const char *p = cfg->heads; *p; p++)
        n += *p == ',';
    out->heads = calloc(n, sizeof *out->heads);
    if (!out->heads)
        return;
    char *copy = strdup(cfg->heads), *save = NULL;
    for (char *t = copy ? strtok_r(copy, ", ", &save) : NULL; t; t = strtok_r(NULL, ", ", &save))
        if (strlen(t) < HEADS_REV_MAX)
            snprintf(out->heads[out->nheads++], HEADS_REV_MAX, "%s", t);
    free(copy);
    out->known = out->nheads > 0;
    snprintf(out->where, sizeof out->where, "the heads setting");
}
