/*
 * wire — see include/wire.h.
 *
 * Each direction is a loop over its chunk: gather a header (5 bytes for a
 * typed message: type + int32 length; 8 for the frontend's untyped
 * start-up packet: int32 length + int32 code), check it, then skip the
 * body, looking only at ReadyForQuery's one status byte and
 * BackendKeyData's four pid bytes.  A message is
 * acted on when its header is complete (the frontend's: what the app has
 * begun to send is pending from then on) or when it ends (the backend's
 * ReadyForQuery).
 */
#include "wire.h"

#include <assert.h>
#include <string.h>

#define CODE_SSL 80877103u
#define CODE_GSSENC 80877104u
#define CODE_CANCEL 80877102u
#define PROTO_3 0x00030000u

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

enum wire_first wire_first(const void *buf, size_t len)
{
    if (!buf || len < 8)
        return WIRE_FIRST_NONE;
    const uint8_t *p = buf;
    uint32_t n = be32(p), code = be32(p + 4);
    if (n == 8 && code == CODE_SSL)
        return WIRE_FIRST_SSL;
    if (n == 8 && code == CODE_GSSENC)
        return WIRE_FIRST_GSSENC;
    if (n == 16 && code == CODE_CANCEL)
        return WIRE_FIRST_CANCEL;
    /* 3.0, and the minor versions a newer libpq may ask for (3.2) */
    if ((code & 0xffff0000u) == PROTO_3 && (code & 0xffffu) < 0x100u && n >= 8 &&
        n <= WIRE_STARTUP_MAX)
        return WIRE_FIRST_STARTUP;
    return WIRE_FIRST_NONE;
}

void wire_init(struct wire *w)
{
    memset(w, 0, sizeof *w);
    w->phase = WIRE_STARTUP;
}

_Static_assert(WIRE_TLS > WIRE_MESSAGES && WIRE_GSS > WIRE_TLS && WIRE_CANCEL > WIRE_TLS &&
                   WIRE_TERMINATED > WIRE_TLS && WIRE_LOST > WIRE_TLS,
               "the ends are the last phases (wire_phase_is_end)");

const char *wire_phase_name(enum wire_phase p)
{
    switch (p) {
    case WIRE_STARTUP: return "startup";
    case WIRE_NEGOTIATE: return "negotiate";
    case WIRE_MESSAGES: return "messages";
    case WIRE_TLS: return "tls";
    case WIRE_GSS: return "gss";
    case WIRE_CANCEL: return "cancel";
    case WIRE_TERMINATED: return "terminated";
    case WIRE_LOST: return "lost";
    }
    return "?";
}

static enum wire_phase lose(struct wire *w, const char *why)
{
    w->phase = WIRE_LOST;
    w->lost = why;
    return WIRE_LOST;
}

/* The frontend's typed messages; the extended-protocol ones are pending
 * until the next Sync. */
enum { FE = 1, FE_EXT = 2, BE = 4 };
static const uint8_t types[256] = {
    /* frontend: Query, FunctionCall, Sync, Terminate, Copy data/done/fail,
     * password/SASL/GSS responses; the extended protocol's */
    ['Q'] = FE, ['F'] = FE, ['S'] = FE | BE, ['X'] = FE, ['d'] = FE | BE, ['c'] = FE | BE,
    ['f'] = FE, ['p'] = FE,
    ['P'] = FE | FE_EXT, ['B'] = FE | FE_EXT, ['E'] = FE | FE_EXT | BE, ['D'] = FE | FE_EXT | BE,
    ['C'] = FE | FE_EXT | BE, ['H'] = FE | FE_EXT | BE,
    /* backend */
    ['R'] = BE, ['K'] = BE, ['Z'] = BE, ['T'] = BE, ['N'] = BE, ['A'] = BE, ['1'] = BE,
    ['2'] = BE, ['3'] = BE, ['n'] = BE, ['s'] = BE, ['t'] = BE, ['I'] = BE, ['G'] = BE,
    ['W'] = BE, ['v'] = BE, ['V'] = BE,
};
static bool fe_type_known(uint8_t t) { return types[t] & FE; }
static bool fe_type_extended(uint8_t t) { return types[t] & FE_EXT; }
static bool be_type_known(uint8_t t) { return types[t] & BE; }

/* A frontend header is complete: account for what it begins. */
static bool fe_begin(struct wire *w, struct wire_half *h, uint32_t n)
{
    if (h->type == 0) { /* the untyped start-up packet: wire_first's rules */
        switch (wire_first(h->hdr, 8)) {
        case WIRE_FIRST_STARTUP:
            w->awaiting++;  /* start-up ends with ReadyForQuery */
            w->phase = WIRE_MESSAGES;
            return true;
        case WIRE_FIRST_SSL:
        case WIRE_FIRST_GSSENC:
            w->negotiated = (uint8_t)wire_first(h->hdr, 8);
            w->phase = WIRE_NEGOTIATE;
            return true;
        case WIRE_FIRST_CANCEL:
            w->phase = WIRE_CANCEL;
            return true;
        case WIRE_FIRST_NONE:
            break;
        }
        lose(w, "the frontend's start-up packet is not one of PostgreSQL's");
        return false;
    }
    if (!fe_type_known(h->type)) {
        lose(w, "an unknown frontend message type");
        return false;
    }
    if (n < 4 || n > WIRE_MESSAGE_MAX) {
        lose(w, "a frontend message length out of range");
        return false;
    }
    switch (h->type) {
    case 'Q': /* a simple query, and a function call: one ReadyForQuery each */
    case 'F':
        w->awaiting++;
        break;
    case 'S': /* Sync closes the extended batch, answered by one ReadyForQuery */
        w->awaiting++;
        w->unsynced = 0;
        break;
    case 'H': /* Flush opens nothing: it counts only after what it flushes (asyncpg's
               * Parse + Describe + Flush: the Parse keeps the batch open).  A lone one
               * is no batch: pg8000 1.10.6 sends a Flush after every message, its
               * PasswordMessage included, and counted, that Flush kept the connection
               * from idle until its first statement's Sync (the gate then ran at the
               * second statement). */
        if (w->unsynced)
            w->unsynced++;
        break;
    case 'X': /* Terminate: the orderly end (its length is 4: nothing follows) */
        if (n != 4) {
            lose(w, "a Terminate of the wrong length");
            return false;
        }
        w->phase = WIRE_TERMINATED; /* (counted as it completes, below) */
        return true;
    default:
        if (fe_type_extended(h->type))
            w->unsynced++;
        break;
    }
    return true;
}

/* A backend header is complete. */
static bool be_begin(struct wire *w, struct wire_half *h, uint32_t n)
{
    if (!be_type_known(h->type)) {
        lose(w, "an unknown backend message type");
        return false;
    }
    if (n < 4 || n > WIRE_MESSAGE_MAX) {
        lose(w, "a backend message length out of range");
        return false;
    }
    if (h->type == 'Z' && n != 5) {
        lose(w, "a ReadyForQuery of the wrong length");
        return false;
    }
    if (h->type == 'K' && n < 8) { /* (the pid; the secret key's length is 4, or
                                      variable from protocol 3.2) */
        lose(w, "a BackendKeyData too short for its process id");
        return false;
    }
    return true;
}

/* `k` body bytes of a BackendKeyData at `p`, `h` before they are consumed
 * (h->left still counts them): its first four are the process id. */
static void key_bytes(struct wire *w, const struct wire_half *h, const uint8_t *p, size_t k)
{
    uint32_t body = be32(h->hdr + 1) - 4; /* (be_begin checked >= 4) */
    uint32_t off = body - h->left;
    for (size_t i = 0; i < k && off < 4; i++, off++) {
        w->key_acc = w->key_acc << 8 | p[i];
        if (off == 3 && w->key_pid == 0)
            w->key_pid = w->key_acc;
    }
}

/* Bytes of the StartupMessage's body (after its 8-byte header): pairs of
 * NUL-terminated key and value, ended by an empty key.  Only "user" and
 * "database" are kept. */
static void startup_bytes(struct wire_startup *s, const uint8_t *p, size_t k)
{
    for (size_t i = 0; i < k && s->in < 2; i++) {
        uint8_t b = p[i];
        if (s->in == 0) { /* a key */
            if (b == 0) {
                if (s->klen == 0) {
                    s->in = 2; /* the empty key: the end */
                    continue;
                }
                s->which = 0;
                if (s->klen != 0xff) {
                    s->key[s->klen] = '\0';
                    s->which = strcmp(s->key, "user") == 0       ? 1
                               : strcmp(s->key, "database") == 0 ? 2
                                                                 : 0;
                }
                if (s->which == 1)
                    s->user[0] = '\0';
                else if (s->which == 2)
                    s->database[0] = '\0';
                s->klen = 0;
                s->vlen = 0;
                s->in = 1;
            } else if (s->klen != 0xff) {
                if (s->klen + 1u < sizeof s->key)
                    s->key[s->klen++] = (char)b;
                else
                    s->klen = 0xff;
            }
            continue;
        }
        /* a value */
        if (b == 0) {
            s->in = 0;
            continue;
        }
        char *v = s->which == 1 ? s->user : s->which == 2 ? s->database : NULL;
        if (!v)
            continue;
        if (s->vlen + 1u < WIRE_NAME_MAX) {
            v[s->vlen++] = (char)b;
            v[s->vlen] = '\0';
        } else {
            s->too_long = true;
        }
    }
}

/* A backend message's one body byte worth looking at: ReadyForQuery's. */
static bool be_body_byte(struct wire *w, const struct wire_half *h, uint8_t b)
{
    if (h->type != 'Z')
        return true;
    if (b != 'I' && b != 'T' && b != 'E') {
        lose(w, "a ReadyForQuery with an unknown transaction status");
        return false;
    }
    if (w->awaiting == 0) {
        lose(w, "a ReadyForQuery the frontend did not wait for");
        return false;
    }
    w->awaiting--;
    w->txn = (char)b;
    return true;
}

/* The server's one-byte answer to an SSLRequest or GSSENCRequest. */
static void be_answer(struct wire *w, uint8_t b)
{
    assert(w->phase == WIRE_NEGOTIATE);
    w->be.msgs++;
    if (b == 'N') {
        w->phase = WIRE_STARTUP; /* plaintext: the StartupMessage follows */
    } else if (b == 'S' && w->negotiated == WIRE_FIRST_SSL) {
        w->phase = WIRE_TLS;
    } else if (b == 'G' && w->negotiated == WIRE_FIRST_GSSENC) {
        w->phase = WIRE_GSS;
    } else if (b == 'E') {
        /* a server too old to know the request answers with an
         * ErrorResponse and closes: follow it as a typed message */
        w->be.msgs--;
        w->phase = WIRE_MESSAGES;
        w->be.type = 'E';
        w->be.hdr[0] = 'E';
        w->be.have = 1;
    } else {
        lose(w, "an unknown answer to SSLRequest/GSSENCRequest");
    }
}

/* The steady state, fast: whole typed messages lying entirely in the
 * chunk, each header read in place.  Stops (returning what it consumed)
 * at anything else -- a message cut by the chunk's end, the frontend's
 * Terminate, a header that does not check -- for feed_half to take over
 * from the same byte.  Precondition: WIRE_MESSAGES, `h` at a boundary. */
static size_t feed_whole(struct wire *w, enum wire_dir dir, struct wire_half *h, const uint8_t *p,
                         size_t len)
{
    const uint8_t *start = p;
    while (len >= 5) {
        uint8_t t = p[0];
        uint32_t n = be32(p + 1);
        /* not whole here (1 + n > len), out of range, or Terminate */
        if (n < 4 || n > WIRE_MESSAGE_MAX || (size_t)n >= len || t == 'X')
            break;
        h->type = t;
        if (dir == WIRE_FE) {
            if (!fe_type_known(t))
                break;
            (void)fe_begin(w, h, n); /* (a known type, a checked length: it holds) */
        } else {
            /* (an unknown type, a bad ReadyForQuery or BackendKeyData:
             * feed_half says why) */
            if (!be_type_known(t) || (t == 'Z' && (n != 5 || !be_body_byte(w, h, p[5]))) ||
                (t == 'K' && n < 8))
                break;
            if (t == 'K' && w->key_pid == 0)
                w->key_pid = be32(p + 5);
        }
        h->msgs++;
        p += 1 + (size_t)n;
        len -= 1 + (size_t)n;
    }
    return (size_t)(p - start);
}

/* One direction's bytes, any phase, any split: a header gathered over
 * chunks, a body skipped over chunks. */
static void feed_half(struct wire *w, enum wire_dir dir, const uint8_t *p, size_t len)
{
    struct wire_half *h = dir == WIRE_FE ? &w->fe : &w->be;
    while (len > 0 && !wire_phase_is_end(w->phase)) {
        if (dir == WIRE_BE && w->phase == WIRE_NEGOTIATE) {
            be_answer(w, *p);
            p++, len--;
            continue;
        }
        if (dir == WIRE_FE && w->phase == WIRE_NEGOTIATE) {
            lose(w, "frontend bytes before the server answered the encryption request");
            return;
        }
        if (dir == WIRE_BE && w->phase == WIRE_STARTUP) {
            lose(w, "backend bytes before the start-up packet");
            return;
        }
        if (h->in_body) {
            if (dir == WIRE_BE && h->type == 'Z' && h->left == 1 && !be_body_byte(w, h, *p))
                return;
            size_t k = len < h->left ? len : h->left;
            if (dir == WIRE_FE && h->type == 0)
                startup_bytes(&w->id, p, k);
            else if (dir == WIRE_BE && h->type == 'K')
                key_bytes(w, h, p, k);
            h->left -= (uint32_t)k;
            p += k, len -= k;
            if (h->left == 0) {
                h->in_body = false;
                h->have = 0;
                h->msgs++;
            }
            continue;
        }
        /* gathering a header */
        bool untyped = dir == WIRE_FE && w->phase == WIRE_STARTUP;
        uint8_t need = untyped ? 8 : 5;
        size_t k = (size_t)(need - h->have);
        if (k > len)
            k = len;
        memcpy(h->hdr + h->have, p, k);
        h->have = (uint8_t)(h->have + k);
        p += k, len -= k;
        if (h->have < need)
            return;
        uint32_t n;
        if (untyped) {
            h->type = 0;
            n = be32(h->hdr);
            if (!fe_begin(w, h, n))
                return;
            h->left = n - 8; /* wire_first checked 8 <= n */
        } else {
            h->type = h->hdr[0];
            n = be32(h->hdr + 1);
            if (!(dir == WIRE_FE ? fe_begin(w, h, n) : be_begin(w, h, n)))
                return;
            h->left = n - 4;
        }
        h->in_body = true;
        if (h->left == 0) {
            h->in_body = false;
            h->have = 0;
            h->msgs++;
        }
    }
}

enum wire_phase wire_feed(struct wire *w, enum wire_dir dir, const void *buf, size_t len)
{
    assert(w);
    assert(buf || len == 0);
    const uint8_t *p = buf;
    struct wire_half *h = dir == WIRE_FE ? &w->fe : &w->be;
    if (w->phase == WIRE_MESSAGES && h->have == 0 && !h->in_body) {
        size_t k = feed_whole(w, dir, h, p, len);
        p += k, len -= k;
    }
    if (len > 0)
        feed_half(w, dir, p, len);
    return w->phase;
}

bool wire_idle(const struct wire *w)
{
    return w->phase == WIRE_MESSAGES && w->txn != 0 && w->awaiting == 0 && w->unsynced == 0 &&
           !w->fe.in_body && w->fe.have == 0 && !w->be.in_body && w->be.have == 0;
}

char wire_txn(const struct wire *w) { return w->txn; }

uint64_t wire_messages(const struct wire *w, enum wire_dir dir)
{
    return dir == WIRE_FE ? w->fe.msgs : w->be.msgs;
}

const char *wire_lost_reason(const struct wire *w) { return w->lost; }

uint32_t wire_backend_pid(const struct wire *w) { return w->key_pid; }

const char *wire_user(const struct wire *w)
{
    if (w->id.in != 2 || w->id.too_long || !w->id.user[0])
        return NULL;
    return w->id.user;
}

const char *wire_database(const struct wire *w)
{
    if (!wire_user(w))
        return NULL;
    return w->id.database[0] ? w->id.database : w->id.user;
}
