/*
 * wire: the framing parser without a server.  Conversations as asyncpg,
 * pg8000 and libpq hold them (wire-protocol.md), built byte for byte; each
 * fed whole, then with every one of its chunks split at every offset, then
 * one byte at a time: the state after each step must be the same.  And the
 * ways a stream is lost, TLS and GSS ends, CancelRequest, recognition.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "wire.h"

/* --- building messages ------------------------------------------------------ */

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
static void putmem(struct buf *b, const void *p, size_t n)
{
    if (n) /* an empty body may come as NULL: memcpy's arguments must not be */
        memcpy(b->b + b->n, p, n);
    b->n += n;
}

/* A typed message with body `body` (`n` bytes). */
static void msg(struct buf *b, char type, const void *body, size_t n)
{
    put8(b, (uint8_t)type);
    put32(b, (uint32_t)(n + 4));
    putmem(b, body, n);
}
static void msgs(struct buf *b, char type, const char *body) { msg(b, type, body, strlen(body) + 1); }
static void rfq(struct buf *b, char status) { msg(b, 'Z', &status, 1); }

static void startup(struct buf *b)
{
    static const char params[] = "user\0app\0database\0shop\0client_encoding\0utf-8\0";
    put32(b, (uint32_t)(8 + sizeof params)); /* sizeof: the closing NUL included */
    put32(b, 196608);
    putmem(b, params, sizeof params);
}
static void sslrequest(struct buf *b) { put32(b, 8), put32(b, 80877103); }
static void gssrequest(struct buf *b) { put32(b, 8), put32(b, 80877104); }

/* The server's greeting after authentication. */
static void greeting(struct buf *b)
{
    uint8_t ok[4] = {0, 0, 0, 0};
    msg(b, 'R', ok, 4);
    static const char ps[] = "server_version\00015.5";
    msg(b, 'S', ps, sizeof ps);
    uint8_t key[8] = {0, 0, 0x12, 0x34, 1, 2, 3, 4};
    msg(b, 'K', key, 8);
    rfq(b, 'I');
}

/* --- a conversation: steps, each one direction's chunk, and what must hold after it */

struct step {
    enum wire_dir dir;
    struct buf bytes;
    enum wire_phase phase;
    char txn;
    bool idle;
};

struct conv {
    struct step s[32];
    int n;
};

static struct buf *add(struct conv *c, enum wire_dir dir, enum wire_phase phase, char txn, bool idle)
{
    struct step *s = &c->s[c->n++];
    memset(s, 0, sizeof *s);
    s->dir = dir, s->phase = phase, s->txn = txn, s->idle = idle;
    return &s->bytes;
}

/* asyncpg on asyncio: Parse + Describe + Flush, then Bind + Execute + Sync;
 * a simple BEGIN/COMMIT; a COPY FROM STDIN; an error in the extended
 * protocol; pg8000's Close + Flush + Sync.  (wire-protocol.md) */
static struct conv asyncpg_conv(bool ssl_refused)
{
    struct conv c = {.n = 0};
    struct buf *b;
    if (ssl_refused) {
        sslrequest(add(&c, WIRE_FE, WIRE_NEGOTIATE, 0, false));
        put8(add(&c, WIRE_BE, WIRE_STARTUP, 0, false), 'N');
    }
    startup(add(&c, WIRE_FE, WIRE_MESSAGES, 0, false));
    greeting(add(&c, WIRE_BE, WIRE_MESSAGES, 'I', true));

    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'I', false); /* Parse + Describe(S) + Flush */
    static const char parse[] = "__asyncpg_stmt_1__\0SELECT $1::int\0\0\0";
    msg(b, 'P', parse, sizeof parse - 1);
    msgs(b, 'D', "S__asyncpg_stmt_1__");
    msg(b, 'H', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'I', false); /* still not idle: no Sync yet */
    msg(b, '1', NULL, 0);
    uint8_t pd[6] = {0, 1, 0, 0, 0, 23};
    msg(b, 't', pd, 6);
    uint8_t rd[] = {0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0};
    msg(b, 'T', rd, sizeof rd);
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'I', false); /* Bind + Execute + Sync */
    uint8_t bind[] = {0, '_', '_', 'a', 0, 0, 0, 0, 1, 0, 0, 0, 1, '7', 0, 0};
    msg(b, 'B', bind, sizeof bind);
    uint8_t exec[] = {0, 0, 0, 0, 0};
    msg(b, 'E', exec, sizeof exec);
    msg(b, 'S', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'I', true);
    msg(b, '2', NULL, 0);
    uint8_t dr[] = {0, 1, 0, 0, 0, 1, '7'};
    msg(b, 'D', dr, sizeof dr);
    msgs(b, 'C', "SELECT 1");
    rfq(b, 'I');

    msgs(add(&c, WIRE_FE, WIRE_MESSAGES, 'I', false), 'Q', "BEGIN;");
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'T', true);
    msgs(b, 'C', "BEGIN");
    rfq(b, 'T');

    /* COPY FROM STDIN: the Query, CopyInResponse, the data, CopyDone */
    msgs(add(&c, WIRE_FE, WIRE_MESSAGES, 'T', false), 'Q', "COPY t FROM STDIN");
    uint8_t cin[] = {0, 0, 1, 0, 0};
    msg(add(&c, WIRE_BE, WIRE_MESSAGES, 'T', false), 'G', cin, sizeof cin);
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'T', false);
    msg(b, 'd', "1\n2\n", 4);
    msg(b, 'c', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'T', true);
    msgs(b, 'C', "COPY 2");
    rfq(b, 'T');

    /* an error inside the extended protocol: skipped to Sync */
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'T', false);
    static const char bad[] = "\0SELEC 1\0\0\0";
    msg(b, 'P', bad, sizeof bad - 1);
    msg(b, 'B', bind, sizeof bind);
    msg(b, 'E', exec, sizeof exec);
    msg(b, 'S', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'E', true);
    static const char err[] = "SERROR\0C42601\0Msyntax error\0\0";
    msg(b, 'N', err, sizeof err); /* a notice first, as a server may send */
    msg(b, 'E', err, sizeof err);
    rfq(b, 'E');

    /* pg8000: Close(P) + Flush + Sync */
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'E', false);
    msgs(b, 'C', "P");
    msg(b, 'H', NULL, 0);
    msg(b, 'S', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'E', true);
    msg(b, '3', NULL, 0);
    rfq(b, 'E');

    msgs(add(&c, WIRE_FE, WIRE_MESSAGES, 'E', false), 'Q', "ROLLBACK");
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'I', true);
    msgs(b, 'C', "ROLLBACK");
    static const char ps[] = "application_name\0x\0";
    msg(b, 'S', ps, sizeof ps); /* a ParameterStatus between */
    rfq(b, 'I');
    return c;
}

static void expect_step(const struct wire *w, const struct step *s, int i, const char *how)
{
    cr_expect_eq(w->phase, s->phase, "%s: step %d: phase %s, expected %s (%s)", how, i,
                 wire_phase_name(w->phase), wire_phase_name(s->phase),
                 wire_lost_reason(w) ? wire_lost_reason(w) : "-");
    cr_expect_eq(wire_txn(w), s->txn, "%s: step %d: txn %d, expected %d", how, i, wire_txn(w),
                 s->txn);
    cr_expect_eq(wire_idle(w), s->idle, "%s: step %d: idle %d, expected %d", how, i,
                 wire_idle(w), s->idle);
}

/* Feed the conversation; step `split` (or every step when -1) cut at `at`
 * (or byte by byte when at == 0). */
static void run(const struct conv *c, int split, size_t at, struct wire *w, const char *how)
{
    wire_init(w);
    for (int i = 0; i < c->n; i++) {
        const struct step *s = &c->s[i];
        if ((split == -1 || split == i) && at == 0) {
            for (size_t k = 0; k < s->bytes.n; k++)
                wire_feed(w, s->dir, s->bytes.b + k, 1);
        } else if (split == i && at < s->bytes.n) {
            wire_feed(w, s->dir, s->bytes.b, at);
            /* in the middle of a chunk: never idle, never an end */
            cr_expect(!wire_idle(w) || at == 0, "%s: idle in the middle of step %d", how, i);
            wire_feed(w, s->dir, s->bytes.b + at, s->bytes.n - at);
        } else {
            wire_feed(w, s->dir, s->bytes.b, s->bytes.n);
        }
        expect_step(w, s, i, how);
    }
}

static void every_split(const struct conv *c)
{
    struct wire whole, w;
    run(c, -1, SIZE_MAX, &whole, "whole");
    for (int i = 0; i < c->n; i++)
        for (size_t at = 1; at < c->s[i].bytes.n; at++) {
            run(c, i, at, &w, "split");
            cr_assert_eq(wire_messages(&w, WIRE_FE), wire_messages(&whole, WIRE_FE));
            cr_assert_eq(wire_messages(&w, WIRE_BE), wire_messages(&whole, WIRE_BE));
            cr_assert_eq(wire_backend_pid(&w), wire_backend_pid(&whole));
        }
    run(c, -1, 0, &w, "byte by byte");
    cr_assert_eq(wire_messages(&w, WIRE_FE), wire_messages(&whole, WIRE_FE));
    cr_assert_eq(wire_messages(&w, WIRE_BE), wire_messages(&whole, WIRE_BE));
    cr_assert_eq(wire_backend_pid(&w), wire_backend_pid(&whole));
}

Test(wire, asyncpg_conversation_whole_and_split_at_every_offset)
{
    struct conv c = asyncpg_conv(false);
    every_split(&c);
    struct wire w;
    run(&c, -1, SIZE_MAX, &w, "whole");
    /* startup, P D H, B E S, Q, Q, d c, P B E S, C H S, Q */
    cr_expect_eq(wire_messages(&w, WIRE_FE), 1 + 3 + 3 + 1 + 1 + 2 + 4 + 3 + 1);
    cr_expect_eq(wire_lost_reason(&w), NULL);
    cr_expect_eq(wire_backend_pid(&w), 0x1234); /* the greeting's BackendKeyData */
}

Test(wire, ssl_refused_then_plaintext)
{
    struct conv c = asyncpg_conv(true);
    every_split(&c);
}

/* pg8000 1.10.6 with a password (md5): it sends a Flush after every message, its
 * PasswordMessage included; that lone Flush opens no batch, so the connection is idle
 * after the greeting and its first statement can be gated (before, the Flush counted
 * until the first statement's Sync). */
Test(wire, pg8000_password_then_flush)
{
    struct conv c = {.n = 0};
    struct buf *b;
    startup(add(&c, WIRE_FE, WIRE_MESSAGES, 0, false));
    uint8_t md5req[8] = {0, 0, 0, 5, 0xfe, 0xe9, 0x6c, 0x60}; /* AuthenticationMD5Password */
    msg(add(&c, WIRE_BE, WIRE_MESSAGES, 0, false), 'R', md5req, sizeof md5req);
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 0, false);
    msgs(b, 'p', "md50123456789abcdef0123456789abcdef");
    msg(b, 'H', NULL, 0);
    greeting(add(&c, WIRE_BE, WIRE_MESSAGES, 'I', true));
    /* its first statement: Parse + Flush + Describe + Flush + Sync + Flush */
    b = add(&c, WIRE_FE, WIRE_MESSAGES, 'I', false);
    static const char parse[] = "pg8000_statement_0\0SELECT 1\0\0\0";
    msg(b, 'P', parse, sizeof parse - 1);
    msg(b, 'H', NULL, 0);
    msgs(b, 'D', "Spg8000_statement_0");
    msg(b, 'H', NULL, 0);
    msg(b, 'S', NULL, 0);
    msg(b, 'H', NULL, 0);
    b = add(&c, WIRE_BE, WIRE_MESSAGES, 'I', true);
    msg(b, '1', NULL, 0);
    msg(b, 'n', NULL, 0);
    rfq(b, 'I');
    every_split(&c);
}

/* A connection through start-up and the server's greeting: idle. */
static struct wire started(void)
{
    struct buf fe = {.n = 0}, be = {.n = 0};
    startup(&fe);
    greeting(&be);
    struct wire w;
    wire_init(&w);
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    wire_feed(&w, WIRE_BE, be.b, be.n);
    cr_assert(wire_idle(&w));
    return w;
}

/* The whole stream of one direction in one chunk, the other's too:
 * pipelined writes (the app sends twice before reading) count right. */
Test(wire, pipelined_queries)
{
    struct wire w = started();
    struct buf fe = {.n = 0}, be = {.n = 0};
    msgs(&fe, 'Q', "SELECT 1");
    msgs(&fe, 'Q', "SELECT 2");
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    msgs(&be, 'C', "SELECT 1");
    rfq(&be, 'I');
    wire_feed(&w, WIRE_BE, be.b, be.n);
    cr_expect(!wire_idle(&w), "one answer still to come");
    wire_feed(&w, WIRE_BE, be.b, be.n);
    cr_expect(wire_idle(&w));
}

Test(wire, tls_accepted_is_an_end)
{
    struct buf fe = {.n = 0};
    sslrequest(&fe);
    struct wire w;
    wire_init(&w);
    cr_expect_eq(wire_feed(&w, WIRE_FE, fe.b, fe.n), WIRE_NEGOTIATE);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "S\x16\x03\x03", 4), WIRE_TLS);
    cr_expect_eq(wire_feed(&w, WIRE_FE, "\x16\x03\x01\x02\x00", 5), WIRE_TLS, "ciphertext ignored");
    cr_expect(!wire_idle(&w));
}

Test(wire, gssenc_accepted_and_refused)
{
    struct buf fe = {.n = 0};
    gssrequest(&fe);
    struct wire w;
    wire_init(&w);
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "G", 1), WIRE_GSS);
    wire_init(&w);
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "N", 1), WIRE_STARTUP);
    /* 'S' is no answer to a GSSENCRequest */
    wire_init(&w);
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "S", 1), WIRE_LOST);
}

Test(wire, old_server_answers_sslrequest_with_an_error)
{
    struct buf fe = {.n = 0}, be = {.n = 0};
    sslrequest(&fe);
    msgs(&be, 'E', "SFATAL");
    struct wire w;
    wire_init(&w);
    wire_feed(&w, WIRE_FE, fe.b, fe.n);
    for (size_t k = 0; k < be.n; k++)
        wire_feed(&w, WIRE_BE, be.b + k, 1);
    cr_expect_eq(w.phase, WIRE_MESSAGES);
    cr_expect_eq(wire_messages(&w, WIRE_BE), 1);
    cr_expect(!w.be.in_body && w.be.have == 0);
}

Test(wire, cancel_request_is_an_end)
{
    struct buf fe = {.n = 0};
    put32(&fe, 16), put32(&fe, 80877102), put32(&fe, 1234), put32(&fe, 5678);
    struct wire w;
    wire_init(&w);
    cr_expect_eq(wire_feed(&w, WIRE_FE, fe.b, fe.n), WIRE_CANCEL);
}

Test(wire, terminate_is_the_end)
{
    struct wire w = started();
    cr_expect_eq(wire_feed(&w, WIRE_FE, "X\0\0\0\4", 5), WIRE_TERMINATED);
    cr_expect_eq(wire_messages(&w, WIRE_FE), 2);
    cr_expect(wire_phase_is_end(w.phase));
    cr_expect_eq(wire_feed(&w, WIRE_BE, "garbage", 7), WIRE_TERMINATED, "nothing read after it");
    w = started();
    cr_expect_eq(wire_feed(&w, WIRE_FE, "X\0\0\0\5\0", 6), WIRE_LOST);
}

Test(wire, lost_on_nonsense)
{
    struct wire w = started();
    cr_expect_eq(wire_feed(&w, WIRE_FE, "?\0\0\0\4", 5), WIRE_LOST);
    cr_expect_str_eq(wire_lost_reason(&w), "an unknown frontend message type");

    w = started();
    cr_expect_eq(wire_feed(&w, WIRE_BE, "Z\0\0\0\5I", 6), WIRE_LOST, "nobody waited for it");
    w = started();
    cr_expect_eq(wire_feed(&w, WIRE_FE, "Q\0\0\0\3", 5), WIRE_LOST, "length below 4");
    w = started();
    cr_expect_eq(wire_feed(&w, WIRE_FE, "Q\x7f\0\0\0", 5), WIRE_LOST, "length above 1 GiB");
    w = started();
    wire_feed(&w, WIRE_FE, "Q\0\0\0\5\0", 6);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "Z\0\0\0\6I", 6), WIRE_LOST, "ReadyForQuery of length 6");
    w = started();
    wire_feed(&w, WIRE_FE, "Q\0\0\0\5\0", 6);
    cr_expect_eq(wire_feed(&w, WIRE_BE, "Z\0\0\0\5X", 6), WIRE_LOST, "status X");
    /* an end stays an end, and nothing after it is read */
    cr_expect_eq(wire_feed(&w, WIRE_BE, "Z\0\0\0\5I", 6), WIRE_LOST);

    struct wire f;
    wire_init(&f);
    cr_expect_eq(wire_feed(&f, WIRE_BE, "N", 1), WIRE_LOST, "backend bytes first");
    wire_init(&f);
    cr_expect_eq(wire_feed(&f, WIRE_FE, "GET / HTTP/1.1\r\n", 16), WIRE_LOST);
    struct buf fe = {.n = 0};
    sslrequest(&fe);
    wire_init(&f);
    wire_feed(&f, WIRE_FE, fe.b, fe.n);
    cr_expect_eq(wire_feed(&f, WIRE_FE, "Q", 1), WIRE_LOST, "no answer yet");
}

Test(wire, recognition)
{
    struct buf b = {.n = 0};
    startup(&b);
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_STARTUP);
    cr_expect_eq(wire_first(b.b, 8), WIRE_FIRST_STARTUP, "8 bytes are enough");
    cr_expect_eq(wire_first(b.b, 7), WIRE_FIRST_NONE);
    b.n = 0;
    sslrequest(&b);
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_SSL);
    b.n = 0;
    gssrequest(&b);
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_GSSENC);
    b.n = 0;
    put32(&b, 16), put32(&b, 80877102);
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_CANCEL);
    b.n = 0;
    put32(&b, 8 + 20), put32(&b, 0x00030002); /* protocol 3.2 */
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_STARTUP);
    b.n = 0;
    put32(&b, 10001), put32(&b, 196608); /* too long for a start-up packet */
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_NONE);
    b.n = 0;
    put32(&b, 100), put32(&b, 0x00020000); /* protocol 2 */
    cr_expect_eq(wire_first(b.b, b.n), WIRE_FIRST_NONE);
    cr_expect_eq(wire_first("GET / HTTP/1.1\r\n", 16), WIRE_FIRST_NONE);
    cr_expect_eq(wire_first("\x16\x03\x01\x02\x00\x01\x00\x01", 8), WIRE_FIRST_NONE,
                 "a TLS ClientHello (direct SSL) is not recognised");
    cr_expect_eq(wire_first(NULL, 0), WIRE_FIRST_NONE);
}

/* Large messages: a 1 MB CopyData in 7-byte chunks, then an idle point. */
Test(wire, large_message_in_small_chunks)
{
    struct wire w = started();
    static uint8_t big[1 << 20];
    size_t n = sizeof big - 5;
    big[0] = 'Q';
    big[1] = (uint8_t)((n + 4) >> 24), big[2] = (uint8_t)((n + 4) >> 16);
    big[3] = (uint8_t)((n + 4) >> 8), big[4] = (uint8_t)(n + 4);
    for (size_t off = 0; off < sizeof big; off += 7)
        wire_feed(&w, WIRE_FE, big + off, sizeof big - off < 7 ? sizeof big - off : 7);
    cr_expect_eq(w.phase, WIRE_MESSAGES);
    cr_expect(!w.fe.in_body);
    struct buf be = {.n = 0};
    msg(&be, 'I', NULL, 0);
    rfq(&be, 'I');
    wire_feed(&w, WIRE_BE, be.b, be.n);
    cr_expect(wire_idle(&w));
}

/* --- the StartupMessage's identity ------------------------------------------- */

/* A StartupMessage with `params` (n bytes: key\0value\0...\0). */
static void startup_with(struct buf *b, const char *params, size_t n)
{
    put32(b, (uint32_t)(8 + n));
    put32(b, 196608);
    putmem(b, params, n);
}

/* `b` fed to a fresh parser split at `cut` (0: whole), then one byte at a
 * time from `cut`: the identity must come out the same. */
static void feed_cut(struct wire *w, const struct buf *b, size_t cut, bool bytewise)
{
    wire_init(w);
    wire_feed(w, WIRE_FE, b->b, cut);
    if (bytewise)
        for (size_t i = cut; i < b->n; i++)
            wire_feed(w, WIRE_FE, b->b + i, 1);
    else
        wire_feed(w, WIRE_FE, b->b + cut, b->n - cut);
}

Test(wire, startup_identity_at_every_split)
{
    struct buf b = {.n = 0};
    static const char params[] = "user\0app\0database\0shop\0client_encoding\0utf-8\0";
    startup_with(&b, params, sizeof params);
    for (size_t cut = 0; cut <= b.n; cut++)
        for (int bw = 0; bw < 2; bw++) {
            struct wire w;
            feed_cut(&w, &b, cut, bw);
            cr_assert_str_eq(wire_user(&w), "app", "cut %zu", cut);
            cr_assert_str_eq(wire_database(&w), "shop", "cut %zu", cut);
            cr_assert_eq(w.phase, WIRE_MESSAGES);
        }
}

Test(wire, startup_identity_database_defaults_to_user)
{
    struct buf b = {.n = 0};
    static const char params[] = "client_encoding\0utf-8\0user\0postgres\0";
    startup_with(&b, params, sizeof params);
    struct wire w;
    feed_cut(&w, &b, 0, false);
    cr_assert_str_eq(wire_user(&w), "postgres");
    cr_assert_str_eq(wire_database(&w), "postgres");
}

Test(wire, startup_identity_unknown_until_the_end_and_when_too_long)
{
    struct buf b = {.n = 0};
    static const char params[] = "user\0app\0database\0shop\0";
    startup_with(&b, params, sizeof params);
    struct wire w;
    wire_init(&w);
    wire_feed(&w, WIRE_FE, b.b, b.n - 1); /* all but the closing NUL */
    cr_assert_null(wire_user(&w));
    cr_assert_null(wire_database(&w));
    wire_feed(&w, WIRE_FE, b.b + b.n - 1, 1);
    cr_assert_str_eq(wire_database(&w), "shop");

    /* a 64-byte database name is not one the server keeps */
    char p[200];
    size_t n = 0;
    memcpy(p + n, "user\0u\0database\0", 16), n += 16;
    memset(p + n, 'd', 64), n += 64;
    p[n++] = 0, p[n++] = 0;
    struct buf l = {.n = 0};
    startup_with(&l, p, n);
    feed_cut(&w, &l, 0, false);
    cr_assert_null(wire_database(&w));
    cr_assert_eq(w.phase, WIRE_MESSAGES); /* the stream itself is fine */

    /* 63 bytes is; a long key of no concern is skipped */
    n = 0;
    memcpy(p + n, "a_very_long_option_name_indeed\0x\0user\0u\0database\0", 49), n += 49;
    memset(p + n, 'd', 63), n += 63;
    p[n++] = 0, p[n++] = 0;
    struct buf m = {.n = 0};
    startup_with(&m, p, n);
    feed_cut(&w, &m, 0, false);
    cr_assert_eq(strlen(wire_database(&w)), 63);
    cr_assert_str_eq(wire_user(&w), "u");
}

Test(wire, startup_identity_after_ssl_refused)
{
    struct conv c = asyncpg_conv(true);
    struct wire w;
    run(&c, -1, SIZE_MAX, &w, "whole");
    cr_assert_str_eq(wire_user(&w), "app");
    cr_assert_str_eq(wire_database(&w), "shop");
}

/* --- BackendKeyData: the server's process id ------------------------------------ */

/* The server's answer to a StartupMessage with a BackendKeyData of pid
 * 0x8a0b0c0d and a secret of `secret` bytes (4; 32 from protocol 3.2);
 * *pid_end: the offset just after its pid's last byte. */
static void greeting_key(struct buf *b, size_t secret, size_t *pid_end)
{
    uint8_t ok[4] = {0, 0, 0, 0};
    msg(b, 'R', ok, 4);
    static const char ps[] = "server_version\00017.2";
    msg(b, 'S', ps, sizeof ps);
    uint8_t key[4 + 32] = {0x8a, 0x0b, 0x0c, 0x0d};
    for (size_t i = 4; i < sizeof key; i++)
        key[i] = (uint8_t)(0xf0 + i);
    *pid_end = b->n + 5 + 4;
    msg(b, 'K', key, 4 + secret);
    msg(b, 'K', (const uint8_t[]){0, 0, 0, 9, 1, 2, 3, 4}, 8); /* a second one: not the pid */
    static const char ps2[] = "TimeZone\0UTC\0";
    msg(b, 'S', ps2, sizeof ps2);
    rfq(b, 'I');
}

Test(wire, backend_key_pid_at_every_split)
{
    for (size_t secret = 4; secret <= 32; secret += 28) {
        struct buf fe = {.n = 0}, be = {.n = 0};
        startup(&fe);
        size_t pid_end;
        greeting_key(&be, secret, &pid_end);
        for (size_t cut = 0; cut <= be.n; cut++)
            for (int bw = 0; bw < 2; bw++) {
                struct wire w;
                wire_init(&w);
                cr_assert_eq(wire_backend_pid(&w), 0);
                wire_feed(&w, WIRE_FE, fe.b, fe.n);
                wire_feed(&w, WIRE_BE, be.b, cut);
                /* 0 until the pid's four bytes have all gone by */
                cr_assert_eq(wire_backend_pid(&w), cut >= pid_end ? 0x8a0b0c0du : 0,
                             "secret %zu, cut %zu: pid %#x", secret, cut, wire_backend_pid(&w));
                if (bw)
                    for (size_t i = cut; i < be.n; i++) {
                        wire_feed(&w, WIRE_BE, be.b + i, 1);
                        cr_assert_eq(wire_backend_pid(&w), i + 1 >= pid_end ? 0x8a0b0c0du : 0,
                                     "secret %zu, cut %zu, byte %zu", secret, cut, i);
                    }
                else
                    wire_feed(&w, WIRE_BE, be.b + cut, be.n - cut);
                cr_assert_eq(wire_backend_pid(&w), 0x8a0b0c0du, "secret %zu, cut %zu", secret,
                             cut);
                cr_assert(wire_idle(&w), "secret %zu, cut %zu", secret, cut);
                cr_assert_eq(wire_messages(&w, WIRE_BE), 6);
            }
    }
}

Test(wire, backend_key_too_short_is_lost)
{
    struct buf fe = {.n = 0}, be = {.n = 0};
    startup(&fe);
    uint8_t ok[4] = {0, 0, 0, 0};
    msg(&be, 'R', ok, 4);
    msg(&be, 'K', (const uint8_t[]){0, 0, 0x12}, 3); /* no whole pid */
    rfq(&be, 'I');
    for (int bw = 0; bw < 2; bw++) {
        struct wire w;
        wire_init(&w);
        wire_feed(&w, WIRE_FE, fe.b, fe.n);
        if (bw)
            for (size_t i = 0; i < be.n; i++)
                wire_feed(&w, WIRE_BE, be.b + i, 1);
        else
            wire_feed(&w, WIRE_BE, be.b, be.n);
        cr_assert_eq(w.phase, WIRE_LOST);
        cr_assert_str_eq(wire_lost_reason(&w), "a BackendKeyData too short for its process id");
        cr_assert_eq(wire_backend_pid(&w), 0);
    }
}
