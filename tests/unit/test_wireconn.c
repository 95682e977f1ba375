/*
 * wireconn: the connection seam on a followed socket, without a server.
 * The pure parsers (ErrorResponse fields, DataRow) on good and malformed
 * bodies; then a wireconn on one end of a socketpair, the test playing the
 * server on the other: the Query message it writes, the results it builds
 * from a scripted reply (notices and ParameterStatus consumed, a
 * NotificationResponse and whatever follows ReadyForQuery kept for the app),
 * an ErrorResponse, and the ends: a malformed reply and a server gone
 * halfway (the socket shut down, the connection broken), a stop test.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dbconn.h"
#include "wireconn.h"

struct buf {
    uint8_t b[4096];
    size_t n;
};

static void put8(struct buf *b, uint8_t v) { b->b[b->n++] = v; }
static void put32(struct buf *b, uint32_t v)
{
    put8(b, (uint8_t)(v >> 24)), put8(b, (uint8_t)(v >> 16)), put8(b, (uint8_t)(v >> 8)),
        put8(b, (uint8_t)v);
}
static void put16(struct buf *b, uint16_t v) { put8(b, (uint8_t)(v >> 8)), put8(b, (uint8_t)v); }
static void putmem(struct buf *b, const void *p, size_t n)
{
    if (n)
        memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void msg(struct buf *b, char type, const void *body, size_t n)
{
    put8(b, (uint8_t)type);
    put32(b, (uint32_t)(n + 4));
    putmem(b, body, n);
}
/* RowDescription of one text column named "c" */
static void rowdesc1(struct buf *b)
{
    struct buf d = {.n = 0};
    put16(&d, 1);
    putmem(&d, "c", 2);
    put32(&d, 0), put16(&d, 0), put32(&d, 25), put16(&d, 0xffff), put32(&d, 0xffffffff),
        put16(&d, 0);
    msg(b, 'T', d.b, d.n);
}
/* DataRow of one value (NULL: a SQL NULL) */
static void datarow1(struct buf *b, const char *v)
{
    struct buf d = {.n = 0};
    put16(&d, 1);
    if (v) {
        put32(&d, (uint32_t)strlen(v));
        putmem(&d, v, strlen(v));
    } else {
        put32(&d, 0xffffffffu);
    }
    msg(b, 'D', d.b, d.n);
}
static void complete(struct buf *b, const char *tag) { msg(b, 'C', tag, strlen(tag) + 1); }
static void rfq(struct buf *b, char st) { msg(b, 'Z', &st, 1); }
static void error(struct buf *b, const char *state, const char *text)
{
    struct buf d = {.n = 0};
    put8(&d, 'S'), putmem(&d, "ERROR", 6);
    put8(&d, 'C'), putmem(&d, state, strlen(state) + 1);
    put8(&d, 'M'), putmem(&d, text, strlen(text) + 1);
    put8(&d, 0);
    msg(b, 'E', d.b, d.n);
}

/* --- the pure parsers -------------------------------------------------------- */

Test(wireconn, error_fields)
{
    struct buf b = {.n = 0};
    error(&b, "55P03", "could not obtain lock");
    char state[6], m[64];
    cr_assert(wireconn_error_fields(b.b + 5, b.n - 5, state, m, sizeof m));
    cr_assert_str_eq(state, "55P03");
    cr_assert_str_eq(m, "could not obtain lock");
    /* cut short: a field without its NUL, or no closing NUL */
    cr_assert_not(wireconn_error_fields(b.b + 5, 10, state, m, sizeof m));
    cr_assert_not(wireconn_error_fields(b.b + 5, b.n - 6, state, m, sizeof m));
    /* a long message is cut to the buffer */
    char small[8];
    cr_assert(wireconn_error_fields(b.b + 5, b.n - 5, state, small, sizeof small));
    cr_assert_str_eq(small, "could n");
}

Test(wireconn, datarow)
{
    struct buf b = {.n = 0};
    put16(&b, 2);
    put32(&b, 2), putmem(&b, "ab", 2);
    put32(&b, 0xffffffffu);
    uint32_t off[2];
    int32_t len[2];
    cr_assert(wireconn_datarow(b.b, b.n, 2, off, len));
    cr_assert_eq(len[0], 2);
    cr_assert_eq(memcmp(b.b + off[0], "ab", 2), 0);
    cr_assert_eq(len[1], -1);
    cr_assert_not(wireconn_datarow(b.b, b.n, 3, off, len));     /* another column count */
    cr_assert_not(wireconn_datarow(b.b, b.n - 1, 2, off, len)); /* cut */
    b.b[5] = 0x7f;                                               /* a length past the end */
    cr_assert_not(wireconn_datarow(b.b, b.n, 2, off, len));
}

/* --- over a socketpair ---------------------------------------------------------- */

static int sp[2];

static struct dbconn *pair(struct wireconn *wc, bool nonblocking)
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    if (nonblocking)
        cr_assert_eq(fcntl(sp[0], F_SETFL, O_NONBLOCK), 0);
    return wireconn_init(wc, sp[0], 'I', "fd test", NULL, NULL);
}

/* The Query message the wireconn wrote, as the server reads it. */
static void expect_query(const char *sql)
{
    uint8_t got[512];
    size_t want = 5 + strlen(sql) + 1;
    size_t n = 0;
    while (n < want) {
        ssize_t r = read(sp[1], got + n, sizeof got - n);
        cr_assert_gt(r, 0);
        n += (size_t)r;
    }
    cr_assert_eq(n, want);
    cr_assert_eq(got[0], 'Q');
    cr_assert_eq((uint32_t)got[1] << 24 | (uint32_t)got[2] << 16 | (uint32_t)got[3] << 8 | got[4],
                 (uint32_t)(want - 1));
    cr_assert_str_eq((const char *)got + 5, sql);
}

static void serve(const struct buf *b) { cr_assert_eq(write(sp[1], b->b, b->n), (ssize_t)b->n); }

static void two_selects(bool nonblocking)
{
    struct wireconn wc;
    struct dbconn *c = pair(&wc, nonblocking);
    cr_assert(dbconn_send(c, "SELECT 1; SELECT NULL"));
    expect_query("SELECT 1; SELECT NULL");
    cr_assert_eq(dbconn_txn(c), DBCONN_BUSY);
    struct buf b = {.n = 0};
    msg(&b, 'N', "SNOTICE\0Mhello\0\0", 16); /* consumed */
    rowdesc1(&b);
    datarow1(&b, "1");
    complete(&b, "SELECT 1");
    static const char ps[] = "TimeZone\0UTC";
    msg(&b, 'S', ps, sizeof ps); /* consumed (a debug line) */
    struct buf note = {.n = 0};
    static const char nb[] = "\0\0\0\x07" "chan\0payload";
    msg(&note, 'A', nb, sizeof nb); /* the app's */
    putmem(&b, note.b, note.n);
    rowdesc1(&b);
    datarow1(&b, NULL);
    complete(&b, "SELECT 1");
    rfq(&b, 'I');
    struct buf after = {.n = 0};
    msg(&after, 'N', "SNOTICE\0Mlater\0\0", 16); /* after ReadyForQuery: the app's */
    putmem(&b, after.b, after.n);
    serve(&b);

    struct dbres *r = dbconn_next(c);
    cr_assert_not_null(r);
    cr_assert_eq(dbres_kind(c, r), DBRES_ROWS);
    cr_assert_eq(dbres_nrows(c, r), 1);
    cr_assert_str_eq(dbres_value(c, r, 0, 0), "1");
    dbres_free(c, r);
    r = dbconn_next(c);
    cr_assert_not_null(r);
    cr_assert(dbres_isnull(c, r, 0, 0));
    cr_assert_str_eq(dbres_value(c, r, 0, 0), "");
    dbres_free(c, r);
    cr_assert_null(dbconn_next(c));
    cr_assert_eq(dbconn_txn(c), DBCONN_IDLE);
    cr_assert_not(wireconn_broken(&wc));
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    cr_assert_eq(n, note.n + after.n);
    cr_assert_eq(memcmp(later, note.b, note.n), 0);
    cr_assert_eq(memcmp(later + note.n, after.b, after.n), 0);
    free(later);
    wireconn_done(&wc);
    close(sp[0]), close(sp[1]);
}

Test(wireconn, results_notices_and_the_apps_bytes) { two_selects(false); }
Test(wireconn, results_on_a_nonblocking_socket) { two_selects(true); }

Test(wireconn, error_then_ready)
{
    struct wireconn wc;
    struct dbconn *c = pair(&wc, false);
    cr_assert(dbconn_send(c, "BEGIN; SELECT nope"));
    expect_query("BEGIN; SELECT nope");
    struct buf b = {.n = 0};
    complete(&b, "BEGIN");
    error(&b, "42703", "column \"nope\" does not exist");
    rfq(&b, 'E');
    serve(&b);
    struct dbres *r = dbconn_next(c);
    cr_assert_eq(dbres_kind(c, r), DBRES_COMMAND);
    dbres_free(c, r);
    r = dbconn_next(c);
    cr_assert_eq(dbres_kind(c, r), DBRES_ERROR);
    cr_assert_str_eq(dbres_sqlstate(c, r), "42703");
    char err[128];
    dbconn_error(c, r, err, sizeof err);
    cr_assert_str_eq(err, "column \"nope\" does not exist");
    dbres_free(c, r);
    cr_assert_null(dbconn_next(c));
    cr_assert_eq(dbconn_txn(c), DBCONN_INERROR);
    wireconn_done(&wc);
    close(sp[0]), close(sp[1]);
}

/* The peer end sees the socket shut down: EOF. */
static void expect_shut_down(void)
{
    uint8_t x[64];
    ssize_t r;
    while ((r = read(sp[1], x, sizeof x)) > 0)
        ;
    cr_assert_eq(r, 0);
}

Test(wireconn, malformed_reply_shuts_the_socket_down)
{
    struct wireconn wc;
    struct dbconn *c = pair(&wc, false);
    cr_assert(dbconn_send(c, "SELECT 1"));
    expect_query("SELECT 1");
    struct buf b = {.n = 0};
    rowdesc1(&b);
    msg(&b, 'G', "\0\0\0", 3); /* CopyInResponse: not an answer to the shim's statements */
    serve(&b);
    cr_assert_null(dbconn_next(c));
    cr_assert(wireconn_broken(&wc));
    cr_assert_eq(dbconn_txn(c), DBCONN_BUSY);
    cr_assert_not(dbconn_send(c, "SELECT 1"));
    expect_shut_down();
    wireconn_done(&wc);
    close(sp[0]), close(sp[1]);
}

Test(wireconn, server_gone_halfway)
{
    struct wireconn wc;
    struct dbconn *c = pair(&wc, true);
    cr_assert(dbconn_send(c, "SELECT 1"));
    expect_query("SELECT 1");
    struct buf b = {.n = 0};
    rowdesc1(&b);
    serve(&b);
    shutdown(sp[1], SHUT_WR);
    cr_assert_null(dbconn_next(c));
    cr_assert(wireconn_broken(&wc));
    cr_assert_str_eq(dbconn_last_error(c), "the server closed the connection");
    wireconn_done(&wc);
    close(sp[0]), close(sp[1]);
}

static int asked;
static bool stop_third(void *arg)
{
    (void)arg;
    return ++asked >= 3;
}

Test(wireconn, stop_ends_a_wait_without_a_word)
{
    struct wireconn wc;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    struct dbconn *c = wireconn_init(&wc, sp[0], 'I', "fd test", stop_third, NULL);
    cr_assert(dbconn_send(c, "SELECT pg_sleep(60)"));
    expect_query("SELECT pg_sleep(60)");
    cr_assert_null(dbconn_next(c)); /* ~3 poll slices, not 60 s */
    cr_assert_eq(asked, 3);
    cr_assert(wireconn_broken(&wc));
    cr_assert_str_eq(dbconn_last_error(c), "the app closed the connection");
    wireconn_done(&wc);
    close(sp[0]), close(sp[1]);
}
