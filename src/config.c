/*
 * config — see include/config.h.  One table, `keys`, is the single source
 * of truth: name, type, where the value lives in struct config, its range.
 * The file reader and the environment reader both go through set_value()
 * with a type-tagged value, so a key behaves the same in either place.
 * libconfig itself is reached through libconfig_dl's table, loaded only
 * when there is a file to read.
 */
#include "config.h"
#include "libconfig_dl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

enum key_type { K_BOOL, K_LOGLEVEL, K_STRING, K_NAME, K_SECONDS, K_INT64, K_ENUM,
                K_COUNT /* an int between min and max */ };

struct key {
    const char *name;
    enum key_type type;
    size_t offset, size;       /* the field; size for strings            */
    double min, max;           /* K_SECONDS, K_COUNT                     */
    const char *const *choices; /* K_ENUM: index = stored int value      */
    size_t set_offset;         /* K_INT64: the bool saying it was set    */
};

static const char *const lock_choices[] = {"xact", "session", "off", NULL};
static const char *const on_timeout_choices[] = {"proceed", "fail", NULL};
static const char *const tool_choices[] = {"auto", "alembic", "django", NULL};

#define F(name) offsetof(struct config, name), sizeof(((struct config *)0)->name)
static const struct key keys[] = {
    {"disable", K_BOOL, F(disable), 0, 0, NULL, 0},
    {"log", K_LOGLEVEL, F(log), 0, 0, NULL, 0},
    {"strict", K_BOOL, F(strict), 0, 0, NULL, 0},
    {"heads", K_STRING, F(heads), 0, 0, NULL, 0},
    {"alembic_ini", K_STRING, F(alembic_ini), 0, 0, NULL, 0},
    {"version_table", K_NAME, F(version_table), 0, 0, NULL, 0},
    {"version_table_schema", K_NAME, F(version_table_schema), 0, 0, NULL, 0},
    {"database", K_NAME, F(database), 0, 0, NULL, 0},
    {"lock", K_ENUM, F(lock), 0, 0, lock_choices, 0},
    {"lock_key", K_INT64, F(lock_key), 0, 0, NULL, offsetof(struct config, lock_key_set)},
    {"wait_timeout", K_SECONDS, F(wait_timeout), 0, 86400 * 7, NULL, 0},
    {"hold_timeout", K_SECONDS, F(hold_timeout), 0, 86400 * 7, NULL, 0},
    {"leader_grace", K_SECONDS, F(leader_grace), 0.01, 86400, NULL, 0},
    {"lead_settle", K_SECONDS, F(lead_settle), 0.5, 3600, NULL, 0},
    {"lead_failures", K_COUNT, F(lead_failures), 0, 1000, NULL, 0},
    {"on_timeout", K_ENUM, F(on_timeout), 0, 0, on_timeout_choices, 0},
    {"guard", K_BOOL, F(guard), 0, 0, NULL, 0},
    {"race_wait", K_SECONDS, F(race_wait), 0, 3600, NULL, 0},
    {"events", K_STRING, F(events), 0, 0, NULL, 0},
    {"tool", K_ENUM, F(tool), 0, 0, tool_choices, 0},
    {"django_target", K_STRING, F(django_target), 0, 0, NULL, 0},
    {"django_settle", K_SECONDS, F(django_settle), 0, 3600, NULL, 0},
    {"django_python", K_STRING, F(django_python), 0, 0, NULL, 0},
    {"gunicorn_heartbeat", K_BOOL, F(gunicorn_heartbeat), 0, 0, NULL, 0},
    {"wire", K_BOOL, F(wire), 0, 0, NULL, 0},
};
#undef F

#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

size_t config_key_count(void) { return NKEYS; }
int config_key_index(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

const char *config_key_name(size_t i) { return i < NKEYS ? keys[i].name : NULL; }

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->disable = false;
    cfg->log = LOG_LVL_INFO;
    cfg->strict = false;
    strcpy(cfg->version_table, "alembic_version");
    cfg->lock = LOCK_XACT;
    cfg->wait_timeout = 300;
    cfg->hold_timeout = 3600;
    cfg->leader_grace = 10;
    cfg->lead_settle = 1;
    cfg->lead_failures = 1;
    cfg->on_timeout = ON_TIMEOUT_PROCEED;
    cfg->guard = true;
    cfg->race_wait = 30;
    cfg->tool = TOOL_AUTO;
    cfg->django_settle = 1;
    cfg->gunicorn_heartbeat = true;
    cfg->wire = true;
}

static void fail(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message quotes what it refuses (a value, a variable name): a control
 * byte there becomes '?', so a value cannot split the log line or colour
 * a terminal. */
static void fail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    for (char *p = err; errsz && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

static const struct key *key_find(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* A value as either source gives it: the environment always gives text;
 * the file gives a typed value (or text for string settings). */
struct value {
    enum { V_TEXT, V_BOOL, V_INT, V_FLOAT } kind;
    const char *text;
    bool b;
    long long i;
    double f;
};

static const char *value_kind_name(const struct value *v)
{
    switch (v->kind) {
    case V_TEXT: return "a string";
    case V_BOOL: return "a boolean";
    case V_INT: return "an integer";
    default: return "a number";
    }
}

static bool parse_bool_text(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Store `v` into key `k` of `cfg`, or write why not (without location)
 * into err and return false. */
static bool set_value(struct config *cfg, const struct key *k, const struct value *v,
                      char *err, size_t errsz)
{
    char *field = (char *)cfg + k->offset;
    switch (k->type) {
    case K_BOOL: {
        bool b;
        if (v->kind == V_BOOL)
            b = v->b;
        else if (v->kind != V_TEXT || !parse_bool_text(v->text, &b)) {
            if (v->kind == V_TEXT)
                fail(err, errsz, "'%s' must be a boolean (true/false, 1/0, yes/no, on/off), got '%s'",
                     k->name, v->text);
            else
                fail(err, errsz, "'%s' must be a boolean, got %s", k->name, value_kind_name(v));
            return false;
        }
        *(bool *)field = b;
        return true;
    }
    case K_LOGLEVEL: {
        enum log_level l;
        if (v->kind != V_TEXT) {
            fail(err, errsz, "'%s' must be one of error, warn, info, debug, got %s", k->name,
                 value_kind_name(v));
            return false;
        }
        if (!log_level_parse(v->text, &l)) {
            fail(err, errsz, "'%s' must be one of error, warn, info, debug, got '%s'", k->name,
                 v->text);
            return false;
        }
        *(enum log_level *)field = l;
        return true;
    }
    case K_STRING:
    case K_NAME: {
        if (v->kind != V_TEXT) {
            fail(err, errsz, "'%s' must be a string, got %s", k->name, value_kind_name(v));
            return false;
        }
        size_t len = strlen(v->text);
        if (len >= k->size || (k->type == K_NAME && len > 63)) {
            fail(err, errsz, "'%s' is too long (%zu bytes, at most %d)", k->name, len,
                 k->type == K_NAME ? 63 : (int)k->size - 1);
            return false;
        }
        if (k->type == K_NAME && strcmp(k->name, "version_table") == 0 && len == 0) {
            fail(err, errsz, "'%s' must not be empty", k->name);
            return false;
        }
        memcpy(field, v->text, len + 1);
        return true;
    }
    case K_SECONDS: {
        double d;
        if (v->kind == V_INT)
            d = (double)v->i;
        else if (v->kind == V_FLOAT)
            d = v->f;
        else if (v->kind == V_TEXT) {
            char *end;
            errno = 0;
            d = strtod(v->text, &end);
            if (end == v->text || *end || errno || !isfinite(d)) {
                fail(err, errsz, "'%s' must be a number of seconds, got '%s'", k->name, v->text);
                return false;
            }
        } else {
            fail(err, errsz, "'%s' must be a number of seconds, got %s", k->name,
                 value_kind_name(v));
            return false;
        }
        if (d < k->min || d > k->max) {
            fail(err, errsz, "'%s' must be between %g and %g seconds, got %g", k->name, k->min,
                 k->max, d);
            return false;
        }
        *(double *)field = d;
        return true;
    }
    case K_INT64: {
        long long i;
        if (v->kind == V_INT)
            i = v->i;
        else if (v->kind == V_TEXT) {
            char *end;
            errno = 0;
            i = strtoll(v->text, &end, 10);
            if (end == v->text || *end || errno) {
                fail(err, errsz, "'%s' must be a 64-bit integer, got '%s'", k->name, v->text);
                return false;
            }
        } else {
            fail(err, errsz, "'%s' must be a 64-bit integer, got %s", k->name, value_kind_name(v));
            return false;
        }
        *(long long *)field = i;
        *(bool *)((char *)cfg + k->set_offset) = true;
        return true;
    }
    case K_COUNT: {
        long long i;
        if (v->kind == V_INT) {
            i = v->i;
        } else if (v->kind == V_TEXT) {
            char *end;
            errno = 0;
            i = strtoll(v->text, &end, 10);
            if (end == v->text || *end || errno) {
                fail(err, errsz, "'%s' must be a whole number, got '%s'", k->name, v->text);
                return false;
            }
        } else {
            fail(err, errsz, "'%s' must be a whole number, got %s", k->name, value_kind_name(v));
            return false;
        }
        if (i < (long long)k->min || i > (long long)k->max) {
            fail(err, errsz, "'%s' must be between %g and %g, got %lld", k->name, k->min, k->max,
                 i);
            return false;
        }
        *(int *)field = (int)i;
        return true;
    }
    case K_ENUM: {
        if (v->kind == V_TEXT) {
            for (int i = 0; k->choices[i]; i++) {
                if (strcasecmp(v->text, k->choices[i]) == 0) {
                    *(int *)field = i;
                    return true;
                }
            }
        }
        char list[128] = "";
        for (int i = 0; k->choices[i]; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, k->choices[i]);
        }
        if (v->kind == V_TEXT)
            fail(err, errsz, "'%s' must be one of %s, got '%s'", k->name, list, v->text);
        else
            fail(err, errsz, "'%s' must be one of %s, got %s", k->name, list, value_kind_name(v));
        return false;
    }
    }
    return false;
}

static void mark(struct config *cfg, const struct key *k, enum config_source src)
{
    cfg->source[k - keys] = src;
}

/*
 * libconfig 1.5 reads an integer that does not fit in 32 bits, written
 * without the L suffix, as a different 32-bit number.  Re-read the digits
 * on the setting's own line and say whether they are the value we got.
 */
static bool int_as_written(const char *path, int line, long long value)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    char buf[1024];
    bool same = true;
    for (int n = 1; fgets(buf, sizeof buf, f); n++) {
        if (n != line)
            continue;
        const char *p = buf + strcspn(buf, "=:");
        if (*p) {
            char *end;
            errno = 0;
            long long written = strtoll(p + 1, &end, 0);
            if (end != p + 1 && (errno == ERANGE || written != value))
                same = false;
        }
        break;
    }
    fclose(f);
    return same;
}

bool config_apply_file(struct config *cfg, const char *path, char *err, size_t errsz)
{
    char why[512];
    const struct libconfig_api *lib = libconfig_dl(why, sizeof why);
    if (!lib) {
        fail(err, errsz, "%s: cannot read the configuration file: %s; install libconfig9, "
             "or remove the file and set MIGSHIM_* variables instead", path, why);
        return false;
    }
    /* libconfig fopen()s the path: a FIFO without a writer would block
     * the process's first connection forever, and so would a socket's
     * peer.  Those are refused; a regular file (or a symlink to one) is
     * read, /dev/null (a character device) reads as empty, and a directory
     * gets its own errno below. */
    struct stat pre;
    if (stat(path, &pre) == 0 && (S_ISFIFO(pre.st_mode) || S_ISSOCK(pre.st_mode))) {
        fail(err, errsz, "%s: cannot read the configuration file: a FIFO or socket, not a "
             "regular file", path);
        return false;
    }
    config_t lc;
    lib->config_init(&lc);
    bool ok = true;
    if (!lib->config_read_file(&lc, path)) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
            struct stat st;
            int e = errno;
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
                e = EISDIR;
            fail(err, errsz, "%s: cannot read the configuration file: %s", path,
                 strerror(e ? e : EIO));
        } else {
            /* an @include'd file reports its own name */
            const char *f = config_error_file(&lc);
            fail(err, errsz, "%s:%d: %s", f ? f : path, config_error_line(&lc),
                 config_error_text(&lc));
        }
        lib->config_destroy(&lc);
        return false;
    }
    snprintf(cfg->file, sizeof cfg->file, "%s", path);
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & S_IWOTH))
        log_warn("%s: the configuration file is world-writable: anyone on this machine can change "
                 "what migshim does inside every process that loads it", path);
    config_setting_t *root = config_root_setting(&lc);
    int n = lib->config_setting_length(root);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = lib->config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        int line = (int)config_setting_source_line(s);
        const char *where = config_setting_source_file(s);
        const char *path_here = where ? where : path;
        const struct key *k = name ? key_find(name) : NULL;
        if (!k) {
            if (ok)
                fail(err, errsz, "%s:%d: unknown key '%s'", path_here, line, name ? name : "?");
            ok = false;
            continue;
        }
        struct value v = {0};
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING: v.kind = V_TEXT; v.text = lib->config_setting_get_string(s); break;
        case CONFIG_TYPE_BOOL: v.kind = V_BOOL; v.b = lib->config_setting_get_bool(s); break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            v.kind = V_INT;
            v.i = lib->config_setting_get_int64(s);
            if (config_setting_type(s) == CONFIG_TYPE_INT && !int_as_written(path_here, line, v.i)) {
                if (ok)
                    fail(err, errsz, "%s:%d: '%s' does not fit in 32 bits: write a 64-bit value "
                         "with an L suffix (123L) or as a string", path_here, line, name);
                ok = false;
                continue;
            }
            break;
        case CONFIG_TYPE_FLOAT: v.kind = V_FLOAT; v.f = lib->config_setting_get_float(s); break;
        default:
            if (ok)
                fail(err, errsz, "%s:%d: '%s' must be a single value, not a group or list", path,
                     line, name);
            ok = false;
            continue;
        }
        if (!set_value(cfg, k, &v, why, sizeof why)) {
            if (ok)
                fail(err, errsz, "%s:%d: %s", path_here, line, why);
            ok = false;
            continue;
        }
        mark(cfg, k, CFG_FILE);
    }
    lib->config_destroy(&lc);
    return ok;
}

#define ENV_PREFIX "MIGSHIM_"

bool config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errsz)
{
    bool ok = true;
    for (; envp && *envp; envp++) {
        const char *e = *envp;
        if (strncmp(e, ENV_PREFIX, sizeof ENV_PREFIX - 1) != 0)
            continue;
        const char *eq = strchr(e, '=');
        if (!eq)
            continue;
        const char *var = e;
        size_t varlen = (size_t)(eq - e);
        const char *name = e + sizeof ENV_PREFIX - 1;
        size_t namelen = (size_t)(eq - name);
        if (namelen == 6 && strncmp(name, "CONFIG", 6) == 0)
            continue;
        char lower[64];
        const struct key *k = NULL;
        if (namelen < sizeof lower) {
            for (size_t i = 0; i < namelen; i++)
                lower[i] = (char)tolower((unsigned char)name[i]);
            lower[namelen] = '\0';
            /* the variable must be spelled in upper case exactly */
            bool upper = true;
            for (size_t i = 0; i < namelen; i++)
                if (islower((unsigned char)name[i]))
                    upper = false;
            k = upper ? key_find(lower) : NULL;
        }
        if (!k) {
            if (ok)
                fail(err, errsz, "%.*s: unknown variable (see 'man migshim.conf' for the keys)",
                     (int)(varlen > 80 ? 80 : varlen), var);
            ok = false;
            continue;
        }
        struct value v = {.kind = V_TEXT, .text = eq + 1};
        char why[256];
        if (!set_value(cfg, k, &v, why, sizeof why)) {
            if (ok)
                fail(err, errsz, "%.*s: %s", (int)varlen, var, why);
            ok = false;
            continue;
        }
        mark(cfg, k, CFG_ENV);
    }
    return ok;
}

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

bool config_load(struct config *cfg, char *const *envp, char *err, size_t errsz)
{
    config_defaults(cfg);
    const char *path = env_get(envp, "MIGSHIM_CONFIG");
    bool ok = true;
    if (path && !*path) {
        fail(err, errsz, "MIGSHIM_CONFIG: empty path");
        ok = false;
        path = NULL;
    } else if (!path) {
        if (access("migshim.conf", F_OK) == 0)
            path = "migshim.conf";
        else if (access("/etc/migshim.conf", F_OK) == 0)
            path = "/etc/migshim.conf";
    }
    if (path && !config_apply_file(cfg, path, err, errsz))
        ok = false;
    char enverr[512];
    if (!config_apply_env(cfg, envp, ok ? err : enverr, ok ? errsz : sizeof enverr))
        ok = false;
    return ok;
}

char *config_key_value(const struct config *cfg, size_t i, char *buf, size_t n)
{
    static const char *const lv[] = {"error", "warn", "info", "debug"};
    const char *field = (const char *)cfg + keys[i].offset;
    switch (keys[i].type) {
    case K_BOOL: snprintf(buf, n, "%s", *(const bool *)field ? "true" : "false"); break;
    case K_LOGLEVEL: snprintf(buf, n, "%s", lv[*(const enum log_level *)field]); break;
    case K_STRING:
    case K_NAME: snprintf(buf, n, "%s", field); break;
    case K_SECONDS: snprintf(buf, n, "%g", *(const double *)field); break;
    case K_INT64:
        if (*(const bool *)((const char *)cfg + keys[i].set_offset))
            snprintf(buf, n, "%lld", *(const long long *)field);
        else
            snprintf(buf, n, "(derived)");
        break;
    case K_ENUM: snprintf(buf, n, "%s", keys[i].choices[*(const int *)field]); break;
    case K_COUNT: snprintf(buf, n, "%d", *(const int *)field); break;
    }
    return buf;
}
