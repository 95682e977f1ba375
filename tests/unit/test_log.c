/*
 * log: log_level_parse, the line format of log_msg (stderr captured through
 * a temp file dup2'ed onto fd 2), the threshold, errno, and
 * log_redact_conninfo on keyword strings and URIs, truncated or not.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* --- capturing stderr ---------------------------------------------------------- */

static int saved_stderr = -1;
static int capture_fd = -1;

static void capture_start(void)
{
    char path[] = "/tmp/migshim-test-log.XXXXXX";
    capture_fd = mkstemp(path);
    cr_assert_geq(capture_fd, 0);
    unlink(path);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert_geq(saved_stderr, 0);
    cr_assert_eq(dup2(capture_fd, STDERR_FILENO), STDERR_FILENO);
}

/* Restore stderr and return everything written meanwhile (static). */
static const char *capture_end(void)
{
    static char buf[8192];
    cr_assert_eq(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
    close(saved_stderr);
    off_t end = lseek(capture_fd, 0, SEEK_END);
    cr_assert_lt(end, (off_t)sizeof buf);
    ssize_t n = pread(capture_fd, buf, (size_t)end, 0);
    cr_assert_eq(n, end);
    buf[n] = '\0';
    close(capture_fd);
    return buf;
}

static const char *line_for(const char *level, const char *msg)
{
    static char want[2048];
    snprintf(want, sizeof want, "migshim[%ld]: %s: %s\n", (long)getpid(), level, msg);
    return want;
}

/* --- log_level_parse ---------------------------------------------------------------- */

Test(log_level, parse_every_level)
{
    static const struct {
        const char *s;
        enum log_level want;
    } ok[] = {
        {"error", LOG_LVL_ERROR}, {"warn", LOG_LVL_WARN},   {"info", LOG_LVL_INFO},
        {"debug", LOG_LVL_DEBUG}, {"ERROR", LOG_LVL_ERROR}, {"Warn", LOG_LVL_WARN},
        {"iNFo", LOG_LVL_INFO},   {"DEBUG", LOG_LVL_DEBUG},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        enum log_level out = (enum log_level)99;
        cr_assert(log_level_parse(ok[i].s, &out), "'%s' rejected", ok[i].s);
        cr_assert_eq(out, ok[i].want, "'%s'", ok[i].s);
    }
}

Test(log_level, parse_rejects_and_leaves_out_untouched)
{
    static const char *const bad[] = {"",      "warning", "err",    "dbg",    "debug ",
                                      " info", "infos",   "trace",  "0",      "3",
                                      "fatal", "errorx",  "de bug", "notice", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum log_level out = (enum log_level)77;
        cr_assert_not(log_level_parse(bad[i], &out), "'%s' accepted", bad[i]);
        cr_assert_eq((int)out, 77, "'%s' changed *out", bad[i]);
    }
}

/* --- log_msg ---------------------------------------------------------------------- */

Test(log_msg, line_format)
{
    capture_start();
    log_msg(LOG_LVL_INFO, "hello %s %d", "world", 42);
    const char *got = capture_end();
    ASSERT_STR(got, line_for("info", "hello world 42"));
}

Test(log_msg, every_level_name_via_macros)
{
    log_set_level(LOG_LVL_DEBUG);
    capture_start();
    log_error("e%d", 1);
    log_warn("w%d", 2);
    log_info("i%d", 3);
    log_debug("d%d", 4);
    const char *got = capture_end();
    char want[1024];
    long pid = (long)getpid();
    snprintf(want, sizeof want,
             "migshim[%ld]: error: e1\nmigshim[%ld]: warn: w2\nmigshim[%ld]: info: i3\n"
             "migshim[%ld]: debug: d4\n",
             pid, pid, pid, pid);
    ASSERT_STR(got, want);
}

Test(log_msg, default_threshold_is_info)
{
    cr_assert(log_enabled(LOG_LVL_ERROR));
    cr_assert(log_enabled(LOG_LVL_WARN));
    cr_assert(log_enabled(LOG_LVL_INFO));
    cr_assert_not(log_enabled(LOG_LVL_DEBUG));
    capture_start();
    log_debug("not shown");
    log_info("shown");
    const char *got = capture_end();
    ASSERT_STR(got, line_for("info", "shown"));
}

Test(log_msg, threshold_respected)
{
    log_set_level(LOG_LVL_WARN);
    cr_assert(log_enabled(LOG_LVL_ERROR));
    cr_assert(log_enabled(LOG_LVL_WARN));
    cr_assert_not(log_enabled(LOG_LVL_INFO));
    cr_assert_not(log_enabled(LOG_LVL_DEBUG));
    capture_start();
    log_debug("d");
    log_info("i");
    log_warn("w");
    log_error("e");
    const char *got = capture_end();
    char want[4200];
    strcpy(want, line_for("warn", "w"));
    strcat(want, line_for("error", "e"));
    ASSERT_STR(got, want);
}

Test(log_msg, threshold_error_only)
{
    log_set_level(LOG_LVL_ERROR);
    capture_start();
    log_warn("w");
    log_error("only this");
    const char *got = capture_end();
    ASSERT_STR(got, line_for("error", "only this"));
}

Test(log_msg, silent_drops_everything_and_can_be_undone)
{
    log_set_level(LOG_LVL_DEBUG);
    log_set_silent(true);
    cr_assert_not(log_enabled(LOG_LVL_ERROR));
    capture_start();
    log_error("e");
    log_debug("d");
    const char *got = capture_end();
    ASSERT_STR(got, "");
    log_set_silent(false);
    cr_assert(log_enabled(LOG_LVL_DEBUG));
    capture_start();
    log_debug("back");
    got = capture_end();
    ASSERT_STR(got, line_for("debug", "back"));
}

Test(log_msg, embedded_newlines_become_spaces)
{
    capture_start();
    log_info("a\nb\r\nc%s", "\nd\n");
    const char *got = capture_end();
    ASSERT_STR(got, line_for("info", "a b  c d "));
}

Test(log_msg, one_write_per_line_even_long)
{
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_start();
    log_info("%s", big);
    const char *got = capture_end();
    size_t len = strlen(got);
    cr_assert_eq(len, 1023u, "a truncated line is 1023 bytes with its newline, got %zu", len);
    cr_assert_eq(got[len - 1], '\n');
    cr_assert_null(memchr(got, '\n', len - 1));
    char prefix[64];
    int pn = snprintf(prefix, sizeof prefix, "migshim[%ld]: info: ", (long)getpid());
    cr_assert_eq(strncmp(got, prefix, (size_t)pn), 0);
    for (size_t i = (size_t)pn; i < len - 1; i++)
        cr_assert_eq(got[i], 'x', "byte %zu", i);
}

Test(log_msg, errno_preserved)
{
    capture_start();
    errno = ENOENT;
    log_info("x %d", 1);
    int e1 = errno;
    errno = EAGAIN;
    log_debug("dropped");
    int e2 = errno;
    (void)capture_end();
    cr_assert_eq(e1, ENOENT);
    cr_assert_eq(e2, EAGAIN);
}

Test(log_msg, errno_preserved_when_write_fails)
{
    saved_stderr = dup(STDERR_FILENO);
    close(STDERR_FILENO); /* write(2) now fails with EBADF */
    errno = ERANGE;
    log_error("into the void");
    int e = errno;
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    cr_assert_eq(e, ERANGE);
}

Test(log_msg, percent_and_empty_message)
{
    capture_start();
    log_warn("%s", "100% sure");
    log_warn("%s", "");
    const char *got = capture_end();
    char want[4200];
    strcpy(want, line_for("warn", "100% sure"));
    strcat(want, line_for("warn", ""));
    ASSERT_STR(got, want);
}

/* --- log_redact_conninfo ------------------------------------------------------------ */

static void expect_redacted(const char *in, const char *want)
{
    char out[1024];
    memset(out, 'Q', sizeof out);
    char *r = log_redact_conninfo(in, out, sizeof out);
    cr_assert_eq(r, out, "must return out");
    cr_assert_str_eq(out, want, "input: %s", in);
}

/* keyword form */

Test(redact, keyword_bare_password)
{
    expect_redacted("host=db password=secret", "host=db password=***");
}

Test(redact, keyword_quoted_password_with_spaces_and_escapes)
{
    expect_redacted("host=db password='a b \\' c\\\\' port=5432", "host=db password=*** port=5432");
    expect_redacted("host=db password='it\\'s  secret'", "host=db password=***");
}

Test(redact, keyword_bare_password_with_escaped_space)
{
    /* libpq reads "a\ b" as the bare value "a b" */
    expect_redacted("password=a\\ b host=h", "password=*** host=h");
}

Test(redact, keyword_spaces_around_equals)
{
    expect_redacted("host=db password = secret port=5432", "host=db password=*** port=5432");
    expect_redacted("password\t=\t'se cret'\tuser=u", "password=***\tuser=u");
}

Test(redact, keyword_empty_value_takes_next_word_like_libpq)
{
    /* libpq: the value of "password= host=db" is "host=db" */
    expect_redacted("password= host=db", "password=***");
    expect_redacted("user=u password=''", "user=u password=***");
}

Test(redact, keyword_password_first_last_only)
{
    expect_redacted("password=secret host=db user=u", "password=*** host=db user=u");
    expect_redacted("host=db user=u dbname=app password=secret", "host=db user=u dbname=app password=***");
    expect_redacted("password=secret", "password=***");
    expect_redacted("  password=secret  ", "  password=***  ");
}

Test(redact, keyword_several_keys_kept_verbatim)
{
    expect_redacted("host=a,b port=5432,5433 dbname='my db' user=app sslmode=require "
                    "password=s3cr3t connect_timeout=10",
                    "host=a,b port=5432,5433 dbname='my db' user=app sslmode=require "
                    "password=*** connect_timeout=10");
}

Test(redact, keyword_other_value_containing_password_text_untouched)
{
    expect_redacted("application_name='x password=y' host=h", "application_name='x password=y' host=h");
    expect_redacted("options='-c password=x' password=real",
                    "options='-c password=x' password=***");
}

Test(redact, keyword_any_key_naming_a_password_is_redacted)
{
    /* sslpassword is a real libpq secret; malformed look-alikes are
     * redacted too (too much is harmless); passfile is a path, kept */
    expect_redacted("sslpassword=k1 passwordx=1 xPassword=2 passfile=/p",
                    "sslpassword=*** passwordx=*** xPassword=*** passfile=/p");
}

Test(redact, keyword_two_passwords)
{
    expect_redacted("password=one host=h password='two'", "password=*** host=h password=***");
}

Test(redact, keyword_no_password_unchanged)
{
    expect_redacted("host=db port=5432 user=u dbname=app", "host=db port=5432 user=u dbname=app");
    expect_redacted("", "");
    expect_redacted("dbname=app", "dbname=app");
}

Test(redact, keyword_unterminated_quote)
{
    expect_redacted("host=h password='abc def", "host=h password=***");
}

Test(redact, null_input)
{
    char out[16];
    memset(out, 'Q', sizeof out);
    cr_assert_eq(log_redact_conninfo(NULL, out, sizeof out), out);
    ASSERT_STR(out, "");
}

Test(redact, zero_size_writes_nothing)
{
    char out[4] = "abc";
    cr_assert_eq(log_redact_conninfo("password=x", out, 0), out);
    ASSERT_STR(out, "abc");
}

/* URI form */

Test(redact, uri_user_password)
{
    expect_redacted("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db");
    expect_redacted("postgres://user:secret@host/db", "postgres://user:***@host/db");
    expect_redacted("postgresql://user:secret@host", "postgresql://user:***@host");
}

Test(redact, uri_user_without_password_unchanged)
{
    expect_redacted("postgresql://user@host/db", "postgresql://user@host/db");
    expect_redacted("postgres://host:5432/db?sslmode=require", "postgres://host:5432/db?sslmode=require");
    expect_redacted("postgresql://", "postgresql://");
    expect_redacted("postgresql:///db", "postgresql:///db");
}

Test(redact, uri_empty_password)
{
    expect_redacted("postgresql://user:@host/db", "postgresql://user:***@host/db");
}

Test(redact, uri_password_with_at_and_colon)
{
    expect_redacted("postgresql://user:p@ss:w@rd@host/db", "postgresql://user:***@host/db");
    expect_redacted("postgresql://user:a:b:c@host/db", "postgresql://user:***@host/db");
    expect_redacted("postgresql://user:p%40ss@host/db", "postgresql://user:***@host/db");
}

Test(redact, uri_password_with_question_mark)
{
    /* libpq reads the user info up to the first '@' before any '/', so
     * "pa?ss" is the password here (PQconninfoParse agrees) */
    expect_redacted("postgresql://u:pa?ss@host/db", "postgresql://u:***@host/db");
}

Test(redact, uri_password_with_hash)
{
    expect_redacted("postgresql://u:pa#ss@host/db", "postgresql://u:***@host/db");
}

Test(redact, uri_multi_host)
{
    expect_redacted("postgresql://user:secret@h1:5432,h2:5433/db?target_session_attrs=read-write",
                    "postgresql://user:***@h1:5432,h2:5433/db?target_session_attrs=read-write");
    expect_redacted("postgresql://user:secret@[::1]:5432,h2/db", "postgresql://user:***@[::1]:5432,h2/db");
}

Test(redact, uri_query_password)
{
    expect_redacted("postgresql://host/db?password=secret&sslmode=require",
                    "postgresql://host/db?password=***&sslmode=require");
    expect_redacted("postgresql://u@host/db?sslmode=require&password=secret",
                    "postgresql://u@host/db?sslmode=require&password=***");
    expect_redacted("postgresql://host/db?password=secret", "postgresql://host/db?password=***");
    expect_redacted("postgresql://host?password=", "postgresql://host?password=***");
}

Test(redact, uri_query_password_only_in_query)
{
    expect_redacted("postgres:///db?host=/tmp&password=x&user=u",
                    "postgres:///db?host=/tmp&password=***&user=u");
}

Test(redact, uri_password_in_both_places)
{
    expect_redacted("postgresql://u:a@host/db?password=b&application_name=x",
                    "postgresql://u:***@host/db?password=***&application_name=x");
}

Test(redact, uri_query_any_key_naming_a_password_is_redacted)
{
    expect_redacted("postgresql://host/db?sslpassword=k&passwordx=1&xpassword=2&passfile=/p",
                    "postgresql://host/db?sslpassword=***&passwordx=***&xpassword=***&passfile=/p");
}

Test(redact, uri_query_percent_encoded_password_key)
{
    /* libpq percent-decodes query keywords: this is password=secret */
    expect_redacted("postgresql://host/db?pass%77ord=secret", "postgresql://host/db?pass%77ord=***");
}

/* truncation */

static void check_truncation(const char *in, const char *secret_chars)
{
    char full[1024];
    log_redact_conninfo(in, full, sizeof full);
    size_t flen = strlen(full);
    cr_assert_null(strpbrk(full, secret_chars), "full output leaks: %s", full);
    for (size_t sz = 1; sz <= flen + 4; sz++) {
        char out[1024];
        memset(out, 'Q', sizeof out);
        log_redact_conninfo(in, out, sz);
        size_t len = strnlen(out, sz);
        cr_assert_lt(len, sz, "size %zu: not NUL-terminated within the buffer", sz);
        cr_assert_eq(out[sz], 'Q', "size %zu: wrote past the buffer", sz);
        cr_assert_null(strpbrk(out, secret_chars), "size %zu leaks: %s", sz, out);
        size_t want = sz - 1 < flen ? sz - 1 : flen;
        cr_assert_eq(len, want, "size %zu", sz);
        cr_assert_eq(strncmp(out, full, len), 0, "size %zu: not a prefix: %s", sz, out);
    }
}

Test(redact, truncation_keyword_never_exposes_password)
{
    /* the password's letters appear nowhere else in the input */
    check_truncation("host=db password=ZJKZJK user=u", "ZJK");
    check_truncation("password='Z Z\\'J' host=db", "ZJ");
    check_truncation("password=ZJ", "ZJ");
}

Test(redact, truncation_uri_never_exposes_password)
{
    check_truncation("postgresql://u:ZJKZ@host/db?password=XVXV&sslmode=require", "ZJKXV");
    check_truncation("postgres://u:Z@Z:J@h", "ZJ");
}

Test(redact, tiny_buffers)
{
    char out[4];
    memset(out, 'Q', sizeof out);
    log_redact_conninfo("password=secret", out, 1);
    cr_assert_eq(out[0], '\0');
    cr_assert_eq(out[1], 'Q');
    log_redact_conninfo("password=secret", out, 2);
    ASSERT_STR(out, "p");
    log_redact_conninfo("postgresql://u:secret@h", out, 4);
    ASSERT_STR(out, "pos");
}
