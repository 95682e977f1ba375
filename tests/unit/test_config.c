/*
 * config: defaults, the file, the environment, config_load's choice of file,
 * every error path with its exact one-line message, config_key_value.
 *
 * Criterion runs each test in its own process, so chdir() and the files
 * written here never leak from one test into another; fini removes them.
 */
#include <criterion/criterion.h>
#include <ctype.h>

/* cr_assert_str_eq that shows both strings when it fails. */
#define ASSERT_STR(got, want)                                                                   \
    do {                                                                                        \
        const char *got_ = (got), *want_ = (want);                                              \
        cr_assert_str_eq(got_, want_, "got:  \"%s\"\nwant: \"%s\"", got_, want_);                \
    } while (0)

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

/* --- helpers --------------------------------------------------------------- */

#define MAX_TEMPS 32
static char temps[MAX_TEMPS][PATH_MAX];
static int ntemps;
static char tempdir[PATH_MAX];

static const char *tmpbase(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* Write `text` to a fresh mkstemp file; returns its path (static storage). */
static const char *write_conf(const char *text)
{
    cr_assert_lt(ntemps, MAX_TEMPS);
    char *path = temps[ntemps++];
    snprintf(path, PATH_MAX, "%s/migshim-test-config.XXXXXX", tmpbase());
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    cr_assert_eq(close(fd), 0);
    return path;
}

/* A fresh temp dir made the current directory. */
static void chdir_tempdir(void)
{
    snprintf(tempdir, sizeof tempdir, "%s/migshim-test-cwd.XXXXXX", tmpbase());
    cr_assert_not_null(mkdtemp(tempdir), "mkdtemp: %s", strerror(errno));
    cr_assert_eq(chdir(tempdir), 0);
}

static void env_free(void);

static void cleanup(void)
{
    env_free();
    for (int i = 0; i < ntemps; i++)
        unlink(temps[i]);
    if (tempdir[0]) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/migshim.conf", tempdir);
        unlink(p);
        if (chdir("/") == 0)
            rmdir(tempdir);
    }
}

TestSuite(config, .fini = cleanup);

/* A NULL-terminated environment of strdup'ed entries, valid until the next
 * call (and freed by cleanup). */
static char *env_store[16];

static void env_free(void)
{
    for (size_t i = 0; env_store[i]; i++) {
        free(env_store[i]);
        env_store[i] = NULL;
    }
}

static char **envv(const char *first, ...)
{
    char **env = env_store;
    env_free();
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        cr_assert_lt(n, 15u);
        env[n++] = strdup(s);
    }
    va_end(ap);
    env[n] = NULL;
    return env;
}

static char *const empty_env[] = {NULL};

#define ERR_UNSET "<err untouched>"

static void fresh(struct config *cfg, char *err, size_t n)
{
    config_defaults(cfg);
    snprintf(err, n, "%s", ERR_UNSET);
}

/* Index of key `name` in table order. */
static size_t key_index(const char *name)
{
    for (size_t i = 0; i < config_key_count(); i++)
        if (strcmp(config_key_name(i), name) == 0)
            return i;
    cr_assert_fail("no key named '%s'", name);
    return 0;
}

static enum config_source src_of(const struct config *cfg, const char *name)
{
    return cfg->source[key_index(name)];
}

/* --- the key table and the defaults ---------------------------------------- */

Test(config, key_table)
{
    size_t n = config_key_count();
    cr_assert_geq(n, 3u);
    cr_assert_leq(n, (size_t)CONFIG_MAX_KEYS);
    /* the three keys every build has, each exactly once */
    static const char *const must[] = {"disable", "log", "strict"};
    for (size_t m = 0; m < 3; m++) {
        int seen = 0;
        for (size_t i = 0; i < n; i++)
            seen += strcmp(config_key_name(i), must[m]) == 0;
        cr_assert_eq(seen, 1, "key '%s' appears %d times", must[m], seen);
    }
    for (size_t i = 0; i < n; i++) {
        const char *k = config_key_name(i);
        cr_assert_not_null(k, "key %zu has no name", i);
        for (const char *c = k; *c; c++)
            cr_assert((*c >= 'a' && *c <= 'z') || *c == '_' || (*c >= '0' && *c <= '9'),
                      "key '%s' is not lower_snake_case (it must map to MIGSHIM_%s)", k, k);
        for (size_t j = i + 1; j < n; j++)
            cr_assert_str_neq(k, config_key_name(j), "duplicate key");
    }
    cr_assert_null(config_key_name(n));
    cr_assert_null(config_key_name((size_t)-1));
}

Test(config, defaults)
{
    struct config cfg;
    memset(&cfg, 0xA5, sizeof cfg);
    config_defaults(&cfg);
    cr_assert_eq(cfg.disable, false);
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(cfg.strict, false);
    ASSERT_STR(cfg.file, "");
    for (size_t i = 0; i < CONFIG_MAX_KEYS; i++)
        cr_assert_eq(cfg.source[i], CFG_DEFAULT, "source[%zu]", i);
    char buf[32];
    ASSERT_STR(config_key_value(&cfg, key_index("disable"), buf, sizeof buf), "false");
    ASSERT_STR(config_key_value(&cfg, key_index("log"), buf, sizeof buf), "info");
    ASSERT_STR(config_key_value(&cfg, key_index("strict"), buf, sizeof buf), "false");
}

Test(config, strict_exit_status_is_ex_config)
{
    cr_assert_eq(CONFIG_EXIT_STRICT, 78);
}

/* --- the file ---------------------------------------------------------------- */

Test(config, file_every_key)
{
    const char *path = write_conf("# all of them\n"
                                  "disable = true;\n"
                                  "log = \"debug\";\n"
                                  "strict = true;\n");
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err));
    cr_assert_str_eq(err, ERR_UNSET, "err written on success: %s", err);
    cr_assert_eq(cfg.disable, true);
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
    cr_assert_eq(cfg.strict, true);
    ASSERT_STR(cfg.file, path);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "log"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_FILE);
}

Test(config, file_false_and_other_levels)
{
    /* start from non-defaults so "false" is a visible change */
    const char *path = write_conf("disable = false\nstrict = false\nlog = \"ERROR\"\n");
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cfg.disable = true;
    cfg.strict = true;
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.disable, false);
    cr_assert_eq(cfg.strict, false);
    cr_assert_eq(cfg.log, LOG_LVL_ERROR);
}

Test(config, file_each_log_level)
{
    static const struct {
        const char *text;
        enum log_level want;
    } cases[] = {
        {"error", LOG_LVL_ERROR}, {"warn", LOG_LVL_WARN},   {"info", LOG_LVL_INFO},
        {"debug", LOG_LVL_DEBUG}, {"Warn", LOG_LVL_WARN},   {"DEBUG", LOG_LVL_DEBUG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "log = \"%s\";\n", cases[i].text);
        ntemps = 0; /* reuse the slots: each file is read before the next */
        const char *path = write_conf(text);
        struct config cfg;
        char err[512];
        fresh(&cfg, err, sizeof err);
        cfg.log = cases[i].want == LOG_LVL_INFO ? LOG_LVL_ERROR : LOG_LVL_INFO;
        cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s: %s", cases[i].text, err);
        cr_assert_eq(cfg.log, cases[i].want, "log = \"%s\"", cases[i].text);
        unlink(path);
    }
}

Test(config, file_empty_is_fine)
{
    const char *path = write_conf("");
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    ASSERT_STR(cfg.file, path);
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(src_of(&cfg, "log"), CFG_DEFAULT);
}

Test(config, file_bool_given_as_string_spellings)
{
    /* a string for a boolean key goes through the same words as the env */
    const char *path = write_conf("disable = \"yes\";\nstrict = \"Off\";\n");
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cfg.strict = true;
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.disable, true);
    cr_assert_eq(cfg.strict, false);
}

/* --- file errors ------------------------------------------------------------- */

static void expect_file_error(const char *text, const char *fmt_after_path)
{
    const char *path = write_conf(text);
    struct config cfg;
    char err[512], want[PATH_MAX + 256];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, path, err, sizeof err), "accepted: %s", text);
    snprintf(want, sizeof want, "%s%s", path, fmt_after_path);
    ASSERT_STR(err, want);
    cr_assert_null(strchr(err, '\n'), "error is more than one line: %s", err);
}

Test(config, file_syntax_error_names_file_and_line)
{
    expect_file_error("disable = true;\n\nlog = ;\n", ":3: syntax error");
}

Test(config, file_syntax_error_unquoted_word)
{
    expect_file_error("disable = yes;\n", ":1: syntax error");
}

Test(config, file_unknown_key)
{
    expect_file_error("# comment\n\nlog = \"warn\";\nverbose = true;\n",
                      ":4: unknown key 'verbose'");
}

Test(config, file_key_names_are_case_sensitive)
{
    expect_file_error("Disable = true;\n", ":1: unknown key 'Disable'");
}

Test(config, file_string_for_bool)
{
    expect_file_error("strict = \"maybe\";\n",
                      ":1: 'strict' must be a boolean (true/false, 1/0, yes/no, on/off), got "
                      "'maybe'");
}

Test(config, file_int_for_bool)
{
    expect_file_error("\ndisable = 1;\n", ":2: 'disable' must be a boolean, got an integer");
}

Test(config, file_int64_for_bool)
{
    expect_file_error("disable = 1L;\n", ":1: 'disable' must be a boolean, got an integer");
}

Test(config, file_float_for_bool)
{
    expect_file_error("strict = 1.5;\n", ":1: 'strict' must be a boolean, got a number");
}

Test(config, file_int_for_log_level)
{
    expect_file_error("log = 3;\n",
                      ":1: 'log' must be one of error, warn, info, debug, got an integer");
}

Test(config, file_bool_for_log_level)
{
    expect_file_error("log = true;\n",
                      ":1: 'log' must be one of error, warn, info, debug, got a boolean");
}

Test(config, file_bad_log_level_text)
{
    expect_file_error("log = \"verbose\";\n",
                      ":1: 'log' must be one of error, warn, info, debug, got 'verbose'");
}

Test(config, file_group_value)
{
    expect_file_error("log = { level = \"debug\"; };\n",
                      ":1: 'log' must be a single value, not a group or list");
}

Test(config, file_list_value)
{
    expect_file_error("disable = ( true );\n",
                      ":1: 'disable' must be a single value, not a group or list");
}

Test(config, file_array_value)
{
    expect_file_error("strict = [ true ];\n",
                      ":1: 'strict' must be a single value, not a group or list");
}

Test(config, file_missing)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/migshim-test-no-such-dir-%ld/x.conf", tmpbase(),
             (long)getpid());
    struct config cfg;
    char err[512], want[PATH_MAX + 128];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: cannot read the configuration file: No such file or directory",
             path);
    ASSERT_STR(err, want);
    ASSERT_STR(cfg.file, "");
}

/* A configuration file that is a FIFO must not block the first
 * connection (fopen of a FIFO without a writer waits for one forever). */
Test(config, file_fifo_is_refused_at_once, .timeout = 10)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/migshim-test-fifo-%ld.conf", tmpbase(), (long)getpid());
    unlink(path);
    cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo: %s", strerror(errno));
    struct config cfg;
    char err[512], want[PATH_MAX + 128];
    fresh(&cfg, err, sizeof err);
    bool ok = config_apply_file(&cfg, path, err, sizeof err);
    unlink(path);
    cr_assert_not(ok);
    snprintf(want, sizeof want, "%s: cannot read the configuration file: not a regular file", path);
    ASSERT_STR(err, want);
    ASSERT_STR(cfg.file, "");
}

/* libconfig's @include: an error inside the included file must name that
 * file and its line, not the including file with the included file's line. */
Test(config, file_error_in_included_file_names_that_file)
{
    const char *inner = write_conf("\n\n\nbogus = 1;\n");
    char text[PATH_MAX + 64];
    snprintf(text, sizeof text, "log = \"debug\";\n@include \"%s\"\n", inner);
    const char *outer = write_conf(text);
    struct config cfg;
    char err[512], want[PATH_MAX + 64];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, outer, err, sizeof err));
    snprintf(want, sizeof want, "%s:4: unknown key 'bogus'", inner);
    ASSERT_STR(err, want);
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
}

Test(config, file_syntax_error_in_included_file_names_that_file)
{
    const char *inner = write_conf("\n\n\n\nlog = ;\n");
    char text[PATH_MAX + 64];
    snprintf(text, sizeof text, "strict = true;\n@include \"%s\"\n", inner);
    const char *outer = write_conf(text);
    struct config cfg;
    char err[512], want[PATH_MAX + 64];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, outer, err, sizeof err));
    snprintf(want, sizeof want, "%s:5: syntax error", inner);
    ASSERT_STR(err, want);
}

Test(config, file_valid_keys_before_an_error_are_applied)
{
    const char *path = write_conf("strict = true;\nlog = \"debug\";\nbogus = 1;\n");
    struct config cfg;
    char err[512], want[PATH_MAX + 64];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, path, err, sizeof err));
    snprintf(want, sizeof want, "%s:3: unknown key 'bogus'", path);
    ASSERT_STR(err, want);
    cr_assert_eq(cfg.strict, true);
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "log"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_DEFAULT);
}

Test(config, file_first_error_is_reported_and_valid_keys_after_it_still_apply)
{
    const char *path = write_conf("log = 7;\nbogus = 1;\nstrict = true;\n");
    struct config cfg;
    char err[512], want[PATH_MAX + 128];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_file(&cfg, path, err, sizeof err));
    snprintf(want, sizeof want, "%s:1: 'log' must be one of error, warn, info, debug, got an integer",
             path);
    ASSERT_STR(err, want);
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(src_of(&cfg, "log"), CFG_DEFAULT);
    cr_assert_eq(cfg.strict, true, "a valid strict after the error must still be known");
    cr_assert_eq(src_of(&cfg, "strict"), CFG_FILE);
}

Test(config, file_error_truncated_to_errsz)
{
    const char *path = write_conf("bogus = 1;\n");
    struct config cfg;
    char err[8];
    config_defaults(&cfg);
    memset(err, 'Z', sizeof err);
    cr_assert_not(config_apply_file(&cfg, path, err, sizeof err));
    cr_assert_eq(strlen(err), sizeof err - 1);
    cr_assert_eq(strncmp(err, path, sizeof err - 1), 0);
}

/* --- the environment ------------------------------------------------------------ */

Test(config, env_every_key)
{
    char **env = envv("HOME=/root", "MIGSHIM_DISABLE=1", "MIGSHIM_LOG=warn", "MIGSHIM_STRICT=on",
                      NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(err, ERR_UNSET);
    cr_assert_eq(cfg.disable, true);
    cr_assert_eq(cfg.log, LOG_LVL_WARN);
    cr_assert_eq(cfg.strict, true);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "log"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_ENV);
    ASSERT_STR(cfg.file, "");
}

Test(config, env_null_and_empty)
{
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, NULL, err, sizeof err));
    cr_assert(config_apply_env(&cfg, empty_env, err, sizeof err));
    ASSERT_STR(err, ERR_UNSET);
    cr_assert_eq(src_of(&cfg, "log"), CFG_DEFAULT);
}

Test(config, env_ignores_other_variables_and_migshim_config)
{
    char **env = envv("PATH=/usr/bin", "MIGSHIM_CONFIG=/nonexistent/x.conf", "MIGSHIM", "MIGSHIMLOG=x",
                      "migshim_log=debug", "XMIGSHIM_LOG=debug", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(err, ERR_UNSET);
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    for (size_t i = 0; i < config_key_count(); i++)
        cr_assert_eq(cfg.source[i], CFG_DEFAULT);
}

Test(config, env_bool_spellings)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {
        {"1", true},     {"0", false},    {"true", true},  {"false", false}, {"yes", true},
        {"no", false},   {"on", true},    {"off", false},  {"TRUE", true},   {"False", false},
        {"YeS", true},   {"NO", false},   {"On", true},    {"oFF", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char var[64];
        snprintf(var, sizeof var, "MIGSHIM_DISABLE=%s", cases[i].text);
        char **env = envv(var, NULL);
        struct config cfg;
        char err[512];
        fresh(&cfg, err, sizeof err);
        cfg.disable = !cases[i].want;
        cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s: %s", var, err);
        cr_assert_eq(cfg.disable, cases[i].want, "%s", var);
        cr_assert_eq(src_of(&cfg, "disable"), CFG_ENV);
    }
}

Test(config, env_bad_bool_texts)
{
    static const char *const bad[] = {"", "2", "y", "n", "truee", " true", "true ", "enable", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char var[64], want[256];
        snprintf(var, sizeof var, "MIGSHIM_STRICT=%s", bad[i]);
        char **env = envv(var, NULL);
        struct config cfg;
        char err[512];
        fresh(&cfg, err, sizeof err);
        cr_assert_not(config_apply_env(&cfg, env, err, sizeof err), "accepted %s", var);
        snprintf(want, sizeof want,
                 "MIGSHIM_STRICT: 'strict' must be a boolean (true/false, 1/0, yes/no, on/off), "
                 "got '%s'",
                 bad[i]);
        ASSERT_STR(err, want);
        cr_assert_eq(cfg.strict, false);
        cr_assert_eq(src_of(&cfg, "strict"), CFG_DEFAULT);
    }
}

Test(config, env_bad_log_level)
{
    char **env = envv("MIGSHIM_LOG=loud", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_LOG: 'log' must be one of error, warn, info, debug, got 'loud'");
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(src_of(&cfg, "log"), CFG_DEFAULT);
}

Test(config, env_log_levels_case_insensitive)
{
    char **env = envv("MIGSHIM_LOG=DeBuG", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
}

Test(config, env_unknown_variable)
{
    char **env = envv("MIGSHIM_VERBOSE=1", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_VERBOSE: unknown variable (see 'man migshim.conf' for the keys)");
}

Test(config, env_empty_key_name)
{
    char **env = envv("MIGSHIM_=1", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_: unknown variable (see 'man migshim.conf' for the keys)");
}

Test(config, env_lower_case_name_is_unknown)
{
    char **env = envv("MIGSHIM_log=debug", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_log: unknown variable (see 'man migshim.conf' for the keys)");
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(src_of(&cfg, "log"), CFG_DEFAULT);
}

Test(config, env_mixed_case_name_is_unknown)
{
    char **env = envv("MIGSHIM_Strict=1", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_Strict: unknown variable (see 'man migshim.conf' for the keys)");
    cr_assert_eq(cfg.strict, false);
}

Test(config, env_long_unknown_name_is_cut_at_80)
{
    char var[200];
    memset(var, 'A', sizeof var);
    memcpy(var, "MIGSHIM_", 8);
    snprintf(var + 150, sizeof var - 150, "=1");
    char **env = envv(var, NULL);
    struct config cfg;
    char err[512], want[256];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    snprintf(want, sizeof want, "%.80s: unknown variable (see 'man migshim.conf' for the keys)", var);
    ASSERT_STR(err, want);
}

Test(config, env_other_valid_variables_still_applied)
{
    char **env = envv("MIGSHIM_LOG=debug", "MIGSHIM_BOGUS=1", "MIGSHIM_DISABLE=sure",
                      "MIGSHIM_STRICT=yes", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    /* the first error only */
    ASSERT_STR(err, "MIGSHIM_BOGUS: unknown variable (see 'man migshim.conf' for the keys)");
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
    cr_assert_eq(cfg.strict, true);
    cr_assert_eq(cfg.disable, false);
    cr_assert_eq(src_of(&cfg, "log"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_DEFAULT);
}

Test(config, env_overrides_file)
{
    const char *path = write_conf("disable = true;\nlog = \"debug\";\nstrict = true;\n");
    char **env = envv("MIGSHIM_LOG=error", "MIGSHIM_STRICT=0", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.disable, true);
    cr_assert_eq(cfg.log, LOG_LVL_ERROR);
    cr_assert_eq(cfg.strict, false);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "log"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_ENV);
}

/* --- config_load ---------------------------------------------------------------- */

Test(config, load_migshim_config_then_env)
{
    const char *path = write_conf("log = \"debug\";\ndisable = true;\n");
    char var[PATH_MAX + 32];
    snprintf(var, sizeof var, "MIGSHIM_CONFIG=%s", path);
    char **env = envv("MIGSHIM_DISABLE=no", var, NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    memset(&cfg, 0x5A, sizeof cfg); /* config_load starts from the defaults itself */
    cr_assert(config_load(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(err, ERR_UNSET);
    ASSERT_STR(cfg.file, path);
    cr_assert_eq(cfg.log, LOG_LVL_DEBUG);
    cr_assert_eq(cfg.disable, false);
    cr_assert_eq(cfg.strict, false);
    cr_assert_eq(src_of(&cfg, "log"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "disable"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_DEFAULT);
}

Test(config, load_missing_migshim_config_file)
{
    char path[PATH_MAX], var[PATH_MAX + 32], want[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/migshim-test-missing-%ld.conf", tmpbase(), (long)getpid());
    snprintf(var, sizeof var, "MIGSHIM_CONFIG=%s", path);
    char **env = envv(var, "MIGSHIM_STRICT=1", NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert_not(config_load(&cfg, env, err, sizeof err));
    snprintf(want, sizeof want, "%s: cannot read the configuration file: No such file or directory",
             path);
    ASSERT_STR(err, want);
    ASSERT_STR(cfg.file, "");
    cr_assert_eq(cfg.strict, true, "the environment still applies, so strict is known");
    cr_assert_eq(src_of(&cfg, "strict"), CFG_ENV);
}

Test(config, load_empty_migshim_config)
{
    /* an empty MIGSHIM_CONFIG is an error, and does not fall back to ./migshim.conf */
    chdir_tempdir();
    FILE *f = fopen("migshim.conf", "w");
    cr_assert_not_null(f);
    fputs("log = \"debug\";\n", f);
    fclose(f);
    char **env = envv("MIGSHIM_CONFIG=", "MIGSHIM_STRICT=true", NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert_not(config_load(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_CONFIG: empty path");
    ASSERT_STR(cfg.file, "");
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(cfg.strict, true);
}

Test(config, load_file_error_is_reported_before_env_error)
{
    const char *path = write_conf("strict = true;\nnope = 1;\n");
    char var[PATH_MAX + 32], want[PATH_MAX + 64];
    snprintf(var, sizeof var, "MIGSHIM_CONFIG=%s", path);
    char **env = envv("MIGSHIM_NOPE=1", var, "MIGSHIM_LOG=warn", NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert_not(config_load(&cfg, env, err, sizeof err));
    snprintf(want, sizeof want, "%s:2: unknown key 'nope'", path);
    ASSERT_STR(err, want);
    cr_assert_eq(cfg.strict, true);
    cr_assert_eq(cfg.log, LOG_LVL_WARN, "valid variables apply after a file error");
}

Test(config, load_env_error_only)
{
    char **env = envv("MIGSHIM_LOG=chatty", NULL);
    chdir_tempdir(); /* no ./migshim.conf here */
    if (access("/etc/migshim.conf", F_OK) == 0)
        cr_skip_test("/etc/migshim.conf exists on this machine");
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert_not(config_load(&cfg, env, err, sizeof err));
    ASSERT_STR(err, "MIGSHIM_LOG: 'log' must be one of error, warn, info, debug, got 'chatty'");
}

Test(config, load_reads_migshim_conf_in_current_directory)
{
    chdir_tempdir();
    FILE *f = fopen("migshim.conf", "w");
    cr_assert_not_null(f);
    fputs("log = \"warn\";\nstrict = true;\n", f);
    fclose(f);
    char **env = envv("MIGSHIM_STRICT=false", NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert(config_load(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(cfg.file, "migshim.conf");
    cr_assert_eq(cfg.log, LOG_LVL_WARN);
    cr_assert_eq(cfg.strict, false);
    cr_assert_eq(src_of(&cfg, "log"), CFG_FILE);
    cr_assert_eq(src_of(&cfg, "strict"), CFG_ENV);
}

Test(config, load_error_in_migshim_conf_in_current_directory)
{
    chdir_tempdir();
    FILE *f = fopen("migshim.conf", "w");
    cr_assert_not_null(f);
    fputs("strict = true;\n\nlog = debug;\n", f);
    fclose(f);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert_not(config_load(&cfg, empty_env, err, sizeof err));
    ASSERT_STR(err, "migshim.conf:3: syntax error");
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
}

Test(config, load_migshim_config_wins_over_current_directory)
{
    const char *path = write_conf("log = \"error\";\n");
    chdir_tempdir();
    FILE *f = fopen("migshim.conf", "w");
    cr_assert_not_null(f);
    fputs("log = \"debug\";\n", f);
    fclose(f);
    char var[PATH_MAX + 32];
    snprintf(var, sizeof var, "MIGSHIM_CONFIG=%s", path);
    char **env = envv(var, NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert(config_load(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(cfg.file, path);
    cr_assert_eq(cfg.log, LOG_LVL_ERROR);
}

Test(config, load_relative_migshim_config)
{
    chdir_tempdir();
    FILE *f = fopen("other.conf", "w");
    cr_assert_not_null(f);
    fputs("disable = true;\n", f);
    fclose(f);
    char **env = envv("MIGSHIM_CONFIG=other.conf", NULL);
    struct config cfg;
    char err[512] = ERR_UNSET;
    bool ok = config_load(&cfg, env, err, sizeof err);
    unlink("other.conf");
    cr_assert(ok, "%s", err);
    ASSERT_STR(cfg.file, "other.conf");
    cr_assert_eq(cfg.disable, true);
}

Test(config, load_no_file_anywhere)
{
    chdir_tempdir();
    if (access("/etc/migshim.conf", F_OK) == 0)
        cr_skip_test("/etc/migshim.conf exists on this machine");
    struct config cfg;
    char err[512] = ERR_UNSET;
    cr_assert(config_load(&cfg, empty_env, err, sizeof err), "%s", err);
    ASSERT_STR(err, ERR_UNSET);
    ASSERT_STR(cfg.file, "");
    cr_assert_eq(cfg.disable, false);
    cr_assert_eq(cfg.log, LOG_LVL_INFO);
    cr_assert_eq(cfg.strict, false);
    for (size_t i = 0; i < config_key_count(); i++)
        cr_assert_eq(cfg.source[i], CFG_DEFAULT);
}

/* --- config_key_value ---------------------------------------------------------- */

Test(config, key_value_text)
{
    struct config cfg;
    config_defaults(&cfg);
    char buf[32];
    size_t d = key_index("disable"), l = key_index("log"), s = key_index("strict");
    cfg.disable = true;
    cfg.strict = true;
    ASSERT_STR(config_key_value(&cfg, d, buf, sizeof buf), "true");
    ASSERT_STR(config_key_value(&cfg, s, buf, sizeof buf), "true");
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int lv = LOG_LVL_ERROR; lv <= LOG_LVL_DEBUG; lv++) {
        cfg.log = (enum log_level)lv;
        ASSERT_STR(config_key_value(&cfg, l, buf, sizeof buf), names[lv]);
    }
    /* returns buf itself */
    cr_assert_eq(config_key_value(&cfg, l, buf, sizeof buf), buf);
}

Test(config, key_value_truncates)
{
    struct config cfg;
    config_defaults(&cfg);
    char buf[3];
    ASSERT_STR(config_key_value(&cfg, key_index("disable"), buf, sizeof buf), "fa");
    ASSERT_STR(config_key_value(&cfg, key_index("log"), buf, sizeof buf), "in");
}

Test(config, key_value_round_trips_through_env)
{
    /* what key_value prints is accepted back as that key's variable */
    static const char *const names[] = {"disable", "log", "strict"};
    struct config a, b;
    config_defaults(&a);
    a.disable = true;
    a.log = LOG_LVL_WARN;
    a.strict = true;
    char vars[3][96];
    for (size_t m = 0; m < 3; m++) {
        char val[32], up[32];
        config_key_value(&a, key_index(names[m]), val, sizeof val);
        size_t j = 0;
        for (; names[m][j] && j < sizeof up - 1; j++)
            up[j] = (char)(names[m][j] - 'a' + 'A');
        up[j] = '\0';
        snprintf(vars[m], sizeof vars[m], "MIGSHIM_%s=%s", up, val);
    }
    ASSERT_STR(vars[0], "MIGSHIM_DISABLE=true");
    ASSERT_STR(vars[1], "MIGSHIM_LOG=warn");
    ASSERT_STR(vars[2], "MIGSHIM_STRICT=true");
    char **env = envv(vars[0], vars[1], vars[2], NULL);
    char err[512] = ERR_UNSET;
    config_defaults(&b);
    cr_assert(config_apply_env(&b, env, err, sizeof err), "%s", err);
    cr_assert_eq(b.disable, true);
    cr_assert_eq(b.log, LOG_LVL_WARN);
    cr_assert_eq(b.strict, true);
}

/* --- the gate's keys: strings, names, seconds, a 64-bit integer, enums ------------ */

static const char *value_of(const struct config *cfg, const char *name)
{
    static char buf[PATH_MAX + 64];
    return config_key_value(cfg, key_index(name), buf, sizeof buf);
}

Test(config, gate_key_defaults)
{
    struct config cfg;
    config_defaults(&cfg);
    ASSERT_STR(cfg.heads, "");
    ASSERT_STR(cfg.alembic_ini, "");
    ASSERT_STR(cfg.version_table, "alembic_version");
    ASSERT_STR(cfg.version_table_schema, "");
    ASSERT_STR(cfg.database, "");
    cr_assert_eq(cfg.lock, LOCK_XACT);
    cr_assert_eq(cfg.lock_key_set, false);
    cr_assert_eq(cfg.wait_timeout, 300.0);
    cr_assert_eq(cfg.hold_timeout, 3600.0);
    cr_assert_eq(cfg.leader_grace, 10.0);
    cr_assert_eq(cfg.on_timeout, ON_TIMEOUT_PROCEED);

    ASSERT_STR(value_of(&cfg, "heads"), "");
    ASSERT_STR(value_of(&cfg, "version_table"), "alembic_version");
    ASSERT_STR(value_of(&cfg, "lock"), "xact");
    ASSERT_STR(value_of(&cfg, "lock_key"), "(derived)");
    ASSERT_STR(value_of(&cfg, "wait_timeout"), "300");
    ASSERT_STR(value_of(&cfg, "hold_timeout"), "3600");
    ASSERT_STR(value_of(&cfg, "leader_grace"), "10");
    ASSERT_STR(value_of(&cfg, "on_timeout"), "proceed");
}

Test(config, gate_keys_from_file)
{
    const char *path = write_conf("heads = \"abc123,def456\";\n"
                                  "alembic_ini = \"/srv/app/alembic.ini\";\n"
                                  "version_table = \"my_versions\";\n"
                                  "version_table_schema = \"audit\";\n"
                                  "database = \"app\";\n"
                                  "lock = \"session\";\n"
                                  "lock_key = 123456789012L;\n"
                                  "wait_timeout = 2.5;\n"
                                  "hold_timeout = 0;\n"
                                  "leader_grace = \"0.25\";\n"
                                  "on_timeout = \"FAIL\";\n");
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    ASSERT_STR(cfg.heads, "abc123,def456");
    ASSERT_STR(cfg.alembic_ini, "/srv/app/alembic.ini");
    ASSERT_STR(cfg.version_table, "my_versions");
    ASSERT_STR(cfg.version_table_schema, "audit");
    ASSERT_STR(cfg.database, "app");
    cr_assert_eq(cfg.lock, LOCK_SESSION);
    cr_assert_eq(cfg.lock_key_set, true);
    cr_assert_eq(cfg.lock_key, 123456789012LL);
    cr_assert_eq(cfg.wait_timeout, 2.5);
    cr_assert_eq(cfg.hold_timeout, 0.0);
    cr_assert_eq(cfg.leader_grace, 0.25);
    cr_assert_eq(cfg.on_timeout, ON_TIMEOUT_FAIL);
    static const char *const keys_set[] = {"heads", "alembic_ini", "version_table",
                                           "version_table_schema", "database", "lock",
                                           "lock_key", "wait_timeout", "hold_timeout",
                                           "leader_grace", "on_timeout"};
    for (size_t i = 0; i < sizeof keys_set / sizeof keys_set[0]; i++)
        cr_assert_eq(src_of(&cfg, keys_set[i]), CFG_FILE, "%s", keys_set[i]);
    ASSERT_STR(value_of(&cfg, "lock"), "session");
    ASSERT_STR(value_of(&cfg, "lock_key"), "123456789012");
    ASSERT_STR(value_of(&cfg, "wait_timeout"), "2.5");
    ASSERT_STR(value_of(&cfg, "leader_grace"), "0.25");
    ASSERT_STR(value_of(&cfg, "on_timeout"), "fail");
    ASSERT_STR(value_of(&cfg, "version_table_schema"), "audit");
}

Test(config, gate_keys_from_env)
{
    char **env = envv("MIGSHIM_HEADS=aaa", "MIGSHIM_VERSION_TABLE_SCHEMA=s", "MIGSHIM_LOCK=Off",
                      "MIGSHIM_LOCK_KEY=-9223372036854775808", "MIGSHIM_WAIT_TIMEOUT=1e2",
                      "MIGSHIM_HOLD_TIMEOUT=604800", "MIGSHIM_LEADER_GRACE=0.01",
                      "MIGSHIM_ON_TIMEOUT=proceed", "MIGSHIM_DATABASE=", NULL);
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    snprintf(cfg.database, sizeof cfg.database, "was-set");
    cfg.on_timeout = ON_TIMEOUT_FAIL;
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    ASSERT_STR(cfg.heads, "aaa");
    ASSERT_STR(cfg.version_table_schema, "s");
    ASSERT_STR(cfg.database, "");
    cr_assert_eq(cfg.lock, LOCK_OFF);
    cr_assert_eq(cfg.lock_key_set, true);
    cr_assert_eq(cfg.lock_key, -9223372036854775807LL - 1);
    cr_assert_eq(cfg.wait_timeout, 100.0);
    cr_assert_eq(cfg.hold_timeout, 604800.0);
    cr_assert_eq(cfg.leader_grace, 0.01);
    cr_assert_eq(cfg.on_timeout, ON_TIMEOUT_PROCEED);
    cr_assert_eq(src_of(&cfg, "lock_key"), CFG_ENV);
    cr_assert_eq(src_of(&cfg, "database"), CFG_ENV);
    ASSERT_STR(value_of(&cfg, "lock_key"), "-9223372036854775808");
    ASSERT_STR(value_of(&cfg, "lock"), "off");
}

static void expect_env_error(const char *var, const char *want)
{
    char **env = envv(var, NULL);
    struct config cfg, before;
    char err[512];
    fresh(&cfg, err, sizeof err);
    memcpy(&before, &cfg, sizeof cfg);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err), "accepted %s", var);
    ASSERT_STR(err, want);
    cr_assert_eq(memcmp(&cfg, &before, sizeof cfg), 0, "%s changed the configuration", var);
}

Test(config, gate_env_errors)
{
    expect_env_error("MIGSHIM_LOCK_KEY=9223372036854775808",
                     "MIGSHIM_LOCK_KEY: 'lock_key' must be a 64-bit integer, got "
                     "'9223372036854775808'");
    expect_env_error("MIGSHIM_LOCK_KEY=12abc",
                     "MIGSHIM_LOCK_KEY: 'lock_key' must be a 64-bit integer, got '12abc'");
    expect_env_error("MIGSHIM_LOCK_KEY=",
                     "MIGSHIM_LOCK_KEY: 'lock_key' must be a 64-bit integer, got ''");
    expect_env_error("MIGSHIM_WAIT_TIMEOUT=soon",
                     "MIGSHIM_WAIT_TIMEOUT: 'wait_timeout' must be a number of seconds, got 'soon'");
    expect_env_error("MIGSHIM_WAIT_TIMEOUT=5s",
                     "MIGSHIM_WAIT_TIMEOUT: 'wait_timeout' must be a number of seconds, got '5s'");
    expect_env_error("MIGSHIM_WAIT_TIMEOUT=nan",
                     "MIGSHIM_WAIT_TIMEOUT: 'wait_timeout' must be a number of seconds, got 'nan'");
    expect_env_error("MIGSHIM_HOLD_TIMEOUT=inf",
                     "MIGSHIM_HOLD_TIMEOUT: 'hold_timeout' must be a number of seconds, got 'inf'");
    expect_env_error("MIGSHIM_WAIT_TIMEOUT=-1",
                     "MIGSHIM_WAIT_TIMEOUT: 'wait_timeout' must be between 0 and 604800 seconds, "
                     "got -1");
    expect_env_error("MIGSHIM_HOLD_TIMEOUT=604801",
                     "MIGSHIM_HOLD_TIMEOUT: 'hold_timeout' must be between 0 and 604800 seconds, "
                     "got 604801");
    expect_env_error("MIGSHIM_LEADER_GRACE=0",
                     "MIGSHIM_LEADER_GRACE: 'leader_grace' must be between 0.01 and 86400 seconds, "
                     "got 0");
    expect_env_error("MIGSHIM_LOCK=table",
                     "MIGSHIM_LOCK: 'lock' must be one of xact, session, off, got 'table'");
    expect_env_error("MIGSHIM_ON_TIMEOUT=",
                     "MIGSHIM_ON_TIMEOUT: 'on_timeout' must be one of proceed, fail, got ''");
    expect_env_error("MIGSHIM_VERSION_TABLE=",
                     "MIGSHIM_VERSION_TABLE: 'version_table' must not be empty");
}

Test(config, gate_name_and_string_lengths)
{
    char var[PATH_MAX + 64], want[256], name[128];
    struct config cfg;
    char err[512];

    /* a PostgreSQL identifier: 63 bytes at most */
    memset(name, 'n', 63);
    name[63] = '\0';
    snprintf(var, sizeof var, "MIGSHIM_DATABASE=%s", name);
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, envv(var, NULL), err, sizeof err), "%s", err);
    ASSERT_STR(cfg.database, name);
    strcat(name, "n");
    snprintf(var, sizeof var, "MIGSHIM_VERSION_TABLE=%s", name);
    expect_env_error(var, "MIGSHIM_VERSION_TABLE: 'version_table' is too long (64 bytes, at most 63)");

    /* heads: the field's size */
    char heads[1100];
    memset(heads, 'h', 1024);
    heads[1024] = '\0';
    snprintf(var, sizeof var, "MIGSHIM_HEADS=%s", heads);
    snprintf(want, sizeof want, "MIGSHIM_HEADS: 'heads' is too long (1024 bytes, at most 1023)");
    expect_env_error(var, want);
    heads[1023] = '\0';
    snprintf(var, sizeof var, "MIGSHIM_HEADS=%s", heads);
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, envv(var, NULL), err, sizeof err), "%s", err);
    cr_assert_eq(strlen(cfg.heads), 1023u);
}

Test(config, gate_file_type_errors)
{
    expect_file_error("heads = 5;\n", ":1: 'heads' must be a string, got an integer");
    expect_file_error("database = true;\n", ":1: 'database' must be a string, got a boolean");
    expect_file_error("lock = 1;\n", ":1: 'lock' must be one of xact, session, off, got an integer");
    expect_file_error("on_timeout = \"later\";\n",
                      ":1: 'on_timeout' must be one of proceed, fail, got 'later'");
    expect_file_error("wait_timeout = true;\n",
                      ":1: 'wait_timeout' must be a number of seconds, got a boolean");
    expect_file_error("leader_grace = 0.001;\n",
                      ":1: 'leader_grace' must be between 0.01 and 86400 seconds, got 0.001");
    expect_file_error("lock_key = 1.5;\n", ":1: 'lock_key' must be a 64-bit integer, got a number");
    expect_file_error("version_table = \"\";\n", ":1: 'version_table' must not be empty");
}

/* stderr of `fn`, captured through a temp file */
static void capture_stderr(void (*fn)(void *), void *arg, char *out, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/migshim-test-stderr.XXXXXX", tmpbase());
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t r = read(fd, out, n - 1);
    out[r > 0 ? r : 0] = '\0';
    close(fd);
    unlink(path);
}

static void apply_file(void *path)
{
    struct config cfg;
    char err[512];
    config_defaults(&cfg);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
}

Test(config, world_writable_file_gets_a_warning, .fini = cleanup)
{
    const char *path = write_conf("log = \"info\";\n");
    char out[1024];
    chmod(path, 0644);
    capture_stderr(apply_file, (void *)path, out, sizeof out);
    cr_assert_str_eq(out, "");
    chmod(path, 0666);
    capture_stderr(apply_file, (void *)path, out, sizeof out);
    char want[1024];
    snprintf(want, sizeof want,
             "migshim[%ld]: warn: %s: the configuration file is world-writable: anyone on this "
             "machine can change what migshim does inside every process that loads it\n",
             (long)getpid(), path);
    cr_assert_str_eq(out, want);
}

/* --- junk in every MIGSHIM_* variable ------------------------------------------------
 * Each key, given each junk value, is either accepted or refused with one
 * clear line: it starts with the variable's name, has no control byte (a
 * newline in the value cannot split the log line), fits the buffer.  Never
 * a crash: this runs under ASan/UBSan in `make check-san`. */

Test(config, env_junk_in_every_variable_gives_one_clear_line)
{
    static char big[6000];
    memset(big, '9', sizeof big - 1);
    static const char *const junk[] = {
        "", " ", "\t5", "5 ", "-0", "+1", "0x10", "1e400", "-1e400", "1e-400", "4.9e-324",
        "9223372036854775807", "-9223372036854775809", "18446744073709551616",
        "%s%n%x", "true\nfalse", "on\r", "yes\x1b[31m", "\xff\xfe\xfd", "ñ", "'\"\\",
        "nan", "-nan", "infinity", "0.", ".5", "1..2", "=", "==x", "0,1",
        NULL /* big */};
    size_t nj = sizeof junk / sizeof junk[0];
    for (size_t k = 0; k < config_key_count(); k++) {
        char upper[64] = "";
        const char *name = config_key_name(k);
        for (size_t i = 0; name[i] && i < sizeof upper - 1; i++)
            upper[i] = (char)toupper((unsigned char)name[i]);
        for (size_t j = 0; j < nj; j++) {
            const char *val = junk[j] ? junk[j] : big;
            size_t need = strlen(upper) + strlen(val) + 16;
            char *var = malloc(need);
            cr_assert_not_null(var);
            snprintf(var, need, "MIGSHIM_%s=%s", upper, val);
            char *envp[] = {var, NULL};
            struct config cfg;
            char err[512];
            fresh(&cfg, err, sizeof err);
            bool ok = config_apply_env(&cfg, envp, err, sizeof err);
            if (!ok) {
                char prefix[96];
                snprintf(prefix, sizeof prefix, "MIGSHIM_%s: ", upper);
                cr_assert(strncmp(err, prefix, strlen(prefix)) == 0,
                          "MIGSHIM_%s=<junk %zu>: error does not name the variable: '%s'", upper, j,
                          err);
                cr_assert_lt(strlen(err), sizeof err);
                for (const char *p = err; *p; p++)
                    cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f,
                              "MIGSHIM_%s=<junk %zu>: control byte 0x%02x in the error: '%s'",
                              upper, j, (unsigned char)*p, err);
            } else {
                cr_assert_str_eq(err, ERR_UNSET, "accepted but wrote an error: %s", err);
            }
            free(var);
        }
    }
    /* the exact text for a newline and an escape sequence */
    expect_env_error("MIGSHIM_DISABLE=true\nfalse",
                     "MIGSHIM_DISABLE: 'disable' must be a boolean (true/false, 1/0, yes/no, "
                     "on/off), got 'true?false'");
    expect_env_error("MIGSHIM_LOG=\x1b[31mdebug",
                     "MIGSHIM_LOG: 'log' must be one of error, warn, info, debug, got '?[31mdebug'");
    expect_env_error("MIGSHIM_NO\nSUCH=1",
                     "MIGSHIM_NO?SUCH: unknown variable (see 'man migshim.conf' for the keys)");
}

Test(config, tool_keys)
{
    struct config cfg;
    config_defaults(&cfg);
    cr_assert_eq(cfg.tool, TOOL_AUTO);
    ASSERT_STR(value_of(&cfg, "tool"), "auto");
    ASSERT_STR(value_of(&cfg, "django_settle"), "1");
    ASSERT_STR(cfg.django_target, "");
    ASSERT_STR(cfg.django_python, "");

    char **env = envv("MIGSHIM_TOOL=Django", "MIGSHIM_DJANGO_SETTLE=0.5",
                      "MIGSHIM_DJANGO_TARGET=/srv/app/.t", "MIGSHIM_DJANGO_PYTHON=/venv/bin/python",
                      NULL);
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.tool, TOOL_DJANGO);
    cr_assert_eq(cfg.django_settle, 0.5);
    ASSERT_STR(cfg.django_target, "/srv/app/.t");
    ASSERT_STR(cfg.django_python, "/venv/bin/python");
    cr_assert_eq(src_of(&cfg, "tool"), CFG_ENV);

    const char *path = write_conf("tool = \"alembic\";\ndjango_settle = 2;\n");
    fresh(&cfg, err, sizeof err);
    cr_assert(config_apply_file(&cfg, path, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.tool, TOOL_ALEMBIC);
    cr_assert_eq(cfg.django_settle, 2.0);

    env = envv("MIGSHIM_TOOL=flask", NULL);
    fresh(&cfg, err, sizeof err);
    cr_assert_not(config_apply_env(&cfg, env, err, sizeof err));
    cr_assert(strstr(err, "MIGSHIM_TOOL") && strstr(err, "auto, alembic, django"), "%s", err);
}

Test(config, lead_end_keys)
{
    struct config cfg;
    char err[512];
    fresh(&cfg, err, sizeof err);
    cr_assert_eq(cfg.lead_settle, 1.0);
    cr_assert_eq(cfg.lead_failures, 1);
    ASSERT_STR(value_of(&cfg, "lead_failures"), "1");
    char **env = envv("MIGSHIM_LEAD_SETTLE=2.5", "MIGSHIM_LEAD_FAILURES=0", NULL);
    cr_assert(config_apply_env(&cfg, env, err, sizeof err), "%s", err);
    cr_assert_eq(cfg.lead_settle, 2.5);
    cr_assert_eq(cfg.lead_failures, 0);
    ASSERT_STR(value_of(&cfg, "lead_failures"), "0");
    cr_assert_eq(src_of(&cfg, "lead_failures"), CFG_ENV);
    expect_env_error("MIGSHIM_LEAD_SETTLE=0.1",
                     "MIGSHIM_LEAD_SETTLE: 'lead_settle' must be between 0.5 and 3600 seconds, "
                     "got 0.1");
    expect_env_error("MIGSHIM_LEAD_FAILURES=-1",
                     "MIGSHIM_LEAD_FAILURES: 'lead_failures' must be between 0 and 1000, got -1");
    expect_env_error("MIGSHIM_LEAD_FAILURES=two",
                     "MIGSHIM_LEAD_FAILURES: 'lead_failures' must be a whole number, got 'two'");
    expect_file_error("lead_failures = 1001;\n",
                      ":1: 'lead_failures' must be between 0 and 1000, got 1001");
    expect_file_error("lead_failures = 1.5;\n",
                      ":1: 'lead_failures' must be a whole number, got a number");
}
