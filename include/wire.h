/*
 * wire — the PostgreSQL protocol (version 3) as bytes on a stream: a pure,
 * incremental framing parser for one connection, both directions.
 *
 * What it is for: the wire layer (wirefd.h) follows the connections of
 * drivers that speak the protocol themselves (asyncpg, pg8000) by feeding
 * this parser every chunk the app wrote (the frontend's bytes) and every
 * chunk it read (the backend's), in order, cut wherever the kernel cut
 * them.  The parser tracks, at message boundaries:
 *   - each direction's framing: the message under way, its type, the body
 *     bytes still to come (a header or a ReadyForQuery split over chunks
 *     at any offset is reassembled);
 *   - the start-up: StartupMessage, SSLRequest or GSSENCRequest and the
 *     server's one-byte answer, CancelRequest;
 *   - the transaction status of the last ReadyForQuery ('I', 'T', 'E');
 *   - the process id of the server's BackendKeyData ('K', sent once during
 *     the start-up): a connection pooler answers with a key of its own, so
 *     the wire gate compares it with pg_backend_pid() (wiregate.h);
 *   - what the app has pending: ReadyForQuery answers it still waits for
 *     (one per StartupMessage, Query, Sync, FunctionCall), and
 *     extended-protocol messages (Parse, Bind, Describe, Execute, Close,
 *     Flush) sent since its last Sync -- asyncpg's Parse+Describe+Flush
 *     leaves one open, and nothing may come between its two halves.  A
 *     Flush with nothing unsynced before it opens nothing (pg8000 1.10.6
 *     sends one after its PasswordMessage).
 *
 * What it promises: it never reads outside the chunk it is given, never
 * allocates, never fails in a way other than WIRE_LOST, and is
 * deterministic: the same bytes in the same order give the same state, in
 * whatever chunks they came.  Once a stream stops making sense (an unknown
 * message type, a length out of range, a ReadyForQuery nobody waited for,
 * frontend bytes before the server answered an SSLRequest) the parser goes
 * to WIRE_LOST and stays there: the caller stops following, it never
 * guesses.  TLS ('S' to an SSLRequest) and GSSAPI encryption ('G') are ends
 * too: what follows is ciphertext; and so is the frontend's Terminate
 * ('X'), the orderly end of a connection.
 *
 * What it must never do: any I/O, logging, locking or use of errno.  It is
 * not thread-safe: the caller serialises the calls on one struct wire
 * (wirefd.c does, per connection).  Being pure, it is async-signal-safe.
 *
 *   struct wire w;
 *   wire_init(&w);
 *   wire_feed(&w, WIRE_FE, startup, n);       // what the app wrote
 *   wire_feed(&w, WIRE_BE, reply, m);         // what it read
 *   if (wire_idle(&w)) ...                    // after ReadyForQuery, nothing pending
 */
#ifndef MIGSHIM_WIRE_H
#define MIGSHIM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Who sent the bytes. */
enum wire_dir {
    WIRE_FE, /* the frontend: the app's writes   */
    WIRE_BE, /* the backend: what the app reads  */
};

/* Where the connection stands. */
enum wire_phase { /* (the ends last: wire_phase_is_end) */
    WIRE_STARTUP,   /* the frontend's next bytes are an untyped start-up packet  */
    WIRE_NEGOTIATE, /* SSLRequest/GSSENCRequest sent: the server's one byte next  */
    WIRE_MESSAGES,  /* StartupMessage sent: typed messages both ways              */
    WIRE_TLS,       /* end: the server answered 'S', TLS follows                  */
    WIRE_GSS,       /* end: the server answered 'G', GSSAPI encryption follows    */
    WIRE_CANCEL,    /* end: a CancelRequest connection (nothing to follow)        */
    WIRE_TERMINATED, /* end: the frontend sent Terminate: the connection is over  */
    WIRE_LOST,      /* end: the stream stopped making sense (wire_lost_reason)    */
};

/* What an opening packet is (wire_first): the recognition of a
 * PostgreSQL connection from the first bytes the app writes on it. */
enum wire_first {
    WIRE_FIRST_NONE,    /* not a PostgreSQL start-up packet         */
    WIRE_FIRST_STARTUP, /* StartupMessage, protocol 3.x             */
    WIRE_FIRST_SSL,     /* SSLRequest (80877103)                    */
    WIRE_FIRST_GSSENC,  /* GSSENCRequest (80877104)                 */
    WIRE_FIRST_CANCEL,  /* CancelRequest (80877102)                 */
};

/* Protocol limits (PostgreSQL's own). */
#define WIRE_STARTUP_MAX 10000u     /* MAX_STARTUP_PACKET_LENGTH                 */
#define WIRE_MESSAGE_MAX 0x40000000u /* 1 GiB: PQ_LARGE_MESSAGE_LIMIT + header    */

/* One direction's framing.  (Opaque to callers: read it through the
 * functions below.) */
struct wire_half {
    uint32_t left;    /* body bytes of the current message still to come     */
    uint8_t hdr[8];   /* header bytes gathered so far                        */
    uint8_t have;     /* how many of them                                    */
    uint8_t type;     /* the current message's type; 0: an untyped packet    */
    bool in_body;     /* the header is complete, `left` body bytes remain     */
    uint64_t msgs;    /* complete messages                                   */
};

/* The StartupMessage's identity, gathered as its body goes by. */
#define WIRE_NAME_MAX 64 /* NAMEDATALEN: a longer name is not one the server keeps */
struct wire_startup {
    char user[WIRE_NAME_MAX];     /* "user"'s value ("" until seen)                */
    char database[WIRE_NAME_MAX]; /* "database"'s value ("" until seen)            */
    char key[16];                 /* the key being read (a longer one is no concern) */
    uint8_t klen;                 /* its bytes so far; 0xff: longer than key[]     */
    uint8_t vlen;                 /* the value's bytes so far                       */
    uint8_t in;                   /* 0: reading a key, 1: a value, 2: the end (the
                                     empty key)                                     */
    uint8_t which;                /* the value being read: 0 neither, 1 user, 2 database */
    bool too_long;                /* user or database longer than WIRE_NAME_MAX - 1  */
};

struct wire {
    enum wire_phase phase;
    struct wire_startup id; /* the StartupMessage's user and database          */
    struct wire_half fe, be;
    char txn;               /* last ReadyForQuery's status: 'I' 'T' 'E'; 0: none yet */
    uint32_t awaiting;      /* ReadyForQuery answers the app waits for             */
    uint32_t unsynced;      /* extended-protocol messages since the last Sync       */
    uint8_t negotiated;     /* WIRE_FIRST_SSL/GSSENC while WIRE_NEGOTIATE          */
    uint32_t key_pid;       /* the first BackendKeyData's process id; 0: none yet  */
    uint32_t key_acc;       /* its bytes gathered so far (a message split at any
                               offset)                                              */
    const char *lost;       /* why WIRE_LOST (a static string), else NULL          */
};

/*
 * What the first bytes an app writes on a stream are.  `buf` holds the
 * first `len` bytes (all the parser needs is 8): a StartupMessage of
 * protocol 3.x with a length in [8, WIRE_STARTUP_MAX], or an SSLRequest,
 * GSSENCRequest (length 8) or CancelRequest (length 16).  Anything else,
 * and anything shorter than 8 bytes, is WIRE_FIRST_NONE.  Pure; reads at
 * most 8 bytes.
 *
 *   wire_first("\0\0\0\x08\x04\xd2\x16\x2f", 8) == WIRE_FIRST_SSL
 */
enum wire_first wire_first(const void *buf, size_t len);

/* A fresh connection: nothing sent yet (WIRE_STARTUP). */
void wire_init(struct wire *w);

/*
 * Feed `len` bytes that went by in direction `dir`, in order, right after
 * the previous chunk of that direction.  Any split is fine, down to one
 * byte at a time.  Returns the phase after the chunk; once it is an end
 * (TLS, GSS, CANCEL, LOST) further chunks are ignored, and bytes after the
 * one that ended it in the same chunk are not looked at.  Never fails
 * otherwise; `buf` may be NULL when `len` is 0.
 */
enum wire_phase wire_feed(struct wire *w, enum wire_dir dir, const void *buf, size_t len);

/* True for TLS, GSS, CANCEL, TERMINATED and LOST: nothing more will be
 * followed.  (The ends are the last phases of the enum.) */
static inline bool wire_phase_is_end(enum wire_phase p) { return p >= WIRE_TLS; }

/* A phase's name ("messages", "tls", "lost", ...), for log lines. */
const char *wire_phase_name(enum wire_phase p);

/*
 * The app is idle on this connection: the start-up is over, every
 * ReadyForQuery it waits for has come, it has sent no extended-protocol
 * message since its last Sync, and both directions are at a message
 * boundary.  The point where, in a later phase, the shim may speak.
 */
bool wire_idle(const struct wire *w);

/* The last ReadyForQuery's transaction status ('I', 'T', 'E'), or 0
 * before the first one. */
char wire_txn(const struct wire *w);

/* Complete messages seen in direction `dir` (the start-up packet and the
 * server's one-byte answer count as one each). */
uint64_t wire_messages(const struct wire *w, enum wire_dir dir);

/*
 * Who the StartupMessage named: its "user", and its "database" (the
 * server's default when absent: the user's name).  NULL before the whole
 * StartupMessage has gone by, when it named no user, or when a name was
 * longer than WIRE_NAME_MAX - 1 bytes (not a name the server keeps: the
 * caller does not guess).  Pure; the strings live in `w`.
 */
const char *wire_user(const struct wire *w);
const char *wire_database(const struct wire *w);

/*
 * The process id of the server's BackendKeyData ('K': the first one, sent
 * during the start-up), or 0 before one came (a message split over chunks
 * counts once its four pid bytes have all gone by).  On a direct
 * connection it is the backend's pg_backend_pid(); a pooler (PgBouncer)
 * sends a cancel key of its own.  Pure.
 */
uint32_t wire_backend_pid(const struct wire *w);

/* Why the stream was lost (a static string), or NULL when it was not. */
const char *wire_lost_reason(const struct wire *w);

#endif
