/*
 * libFuzzer: the wire gate's reply parser (src/wireconn.c).  The input is
 * what a server answers to one Query of the shim's: written into one end
 * of a socketpair (then closed for writing), read by a wireconn on the
 * other, result by result, until it says there are none.  Oracles: no
 * crash, leak or undefined behaviour; every result's cells are in range;
 * after the last result the connection is either idle in a known status
 * or broken; the bytes kept for the app never exceed what came after the
 * shim's own messages.  Also the pure ErrorResponse and DataRow parsers
 * on the raw input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"

#include "dbconn.h"
#include "log.h"
#include "wireconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    log_set_silent(true); /* (a broken reply says so: not a finding) */
    char state[6], msg[64];
    (void)wireconn_error_fields(data, size, state, msg, sizeof msg);
    uint32_t off[4];
    int32_t len[4];
    if (wireconn_datarow(data, size, 3, off, len))
        for (int k = 0; k < 3; k++)
            if (len[k] >= 0 && (size_t)off[k] + (size_t)len[k] > size)
                abort();

    if (size > 100000)
        return 0; /* (the socket buffer holds it whole) */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        abort();
    struct wireconn wc;
    struct dbconn *c = wireconn_init(&wc, sp[0], 'I', "fuzz", NULL, NULL);
    if (!dbconn_send(c, "SELECT 1"))
        abort();
    if (size && write(sp[1], data, size) != (ssize_t)size)
        abort();
    shutdown(sp[1], SHUT_WR);
    for (struct dbres *r; (r = dbconn_next(c)) != NULL; dbres_free(c, r)) {
        int nr = dbres_nrows(c, r), nc = dbres_ncols(c, r);
        if (nr < 0 || nc < 0)
            abort();
        for (int i = 0; i < nr; i++)
            for (int j = 0; j < nc; j++)
                if (!dbres_isnull(c, r, i, j))
                    (void)strlen(dbres_value(c, r, i, j));
        (void)strlen(dbres_sqlstate(c, r));
    }
    if (!wireconn_broken(&wc) && dbconn_txn(c) == DBCONN_BUSY)
        abort();
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    if (n > size)
        abort();
    free(later);
    wireconn_done(&wc);
    close(sp[0]);
    close(sp[1]);
    return 0;
}
