/* libFuzzer: the conninfo/URI redactor.  Oracle: a keyword-form input
 * holding the word `password=ZZSECRETZZ ` must never come out with that
 * value still after its key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (!text)
        return 0;
    char out[512];
    log_redact_conninfo(text, out, sizeof out);
    log_redact_conninfo(text, out, 7); /* truncation */
    /* a marker secret after password= must never survive */
 /* the marker must start a word: preceded by nothing or white space */
    const char *m = strstr(text, "password=ZZSECRETZZ ");
    if (m && (m == text || m[-1] == ' ') && !strchr(text, '\'') && !strchr(text, '\\') && strncmp(text, "postgres", 8) != 0) {
        char big[8192];
        log_redact_conninfo(text, big, sizeof big);
        for (const char *o = strstr(big, "password=ZZSECRETZZ"); o;
             o = strstr(o + 1, "password=ZZSECRETZZ"))
            if (o == big || o[-1] == ' ')
                abort(); /* a keyword password kept its value */
    }
    free(text);
    return 0;
}
