/*
 * libFuzzer: the wire framing parser (src/wire.c).  The input is a
 * conversation: each record is one byte (bit 7: direction, low bits: a
 * length 0..127) and that many bytes of stream, so the fuzzer picks both
 * the bytes and where the chunks are cut.  Oracles: the same streams fed
 * whole (each direction's chunks in the same order, unsplit where
 * consecutive) and fed one byte at a time end in the same state, an end
 * phase never changes, and idle never holds mid-message.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "wire.h"

static void same(const struct wire *a, const struct wire *b)
{
    if (a->phase != b->phase || a->txn != b->txn || a->awaiting != b->awaiting ||
        a->unsynced != b->unsynced || wire_idle(a) != wire_idle(b) ||
        (!wire_phase_is_end(a->phase) &&
         (a->fe.msgs != b->fe.msgs || a->be.msgs != b->be.msgs)))
        abort();
    /* the StartupMessage's identity, whatever the cuts */
    const char *ua = wire_user(a), *ub = wire_user(b), *da = wire_database(a),
               *db = wire_database(b);
    if ((ua == NULL) != (ub == NULL) || (ua && strcmp(ua, ub) != 0) || (da == NULL) != (db == NULL) ||
        (da && strcmp(da, db) != 0))
        abort();
    if (ua && strlen(ua) >= WIRE_NAME_MAX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wire chunked, bytewise;
    wire_init(&chunked);
    wire_init(&bytewise);
    size_t i = 0;
    while (i < size) {
        enum wire_dir dir = (data[i] & 0x80) ? WIRE_BE : WIRE_FE;
        size_t n = data[i] & 0x7f;
        i++;
        if (n > size - i)
            n = size - i;
        enum wire_phase before = chunked.phase;
        wire_feed(&chunked, dir, data + i, n);
        if (wire_phase_is_end(before) && chunked.phase != before)
            abort();
        for (size_t k = 0; k < n; k++)
            wire_feed(&bytewise, dir, data + i + k, 1);
        same(&chunked, &bytewise);
        if (wire_idle(&chunked) && (chunked.fe.in_body || chunked.be.in_body))
            abort();
        i += n;
    }
    (void)wire_messages(&chunked, WIRE_FE);
    (void)wire_lost_reason(&chunked);
    (void)wire_first(data, size);
    return 0;
}
