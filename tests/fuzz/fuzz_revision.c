/* libFuzzer: the revision-file parser and heads computation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "heads.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (!text)
        return 0;
    struct revfile rf;
    int line = 0;
    char err[256];
    if (heads_parse_revision(text, &rf, &line, err, sizeof err) == 1) {
        struct heads h = {0};
        heads_compute(&rf, 1, &h, err, sizeof err);
        heads_free(&h);
        heads_revfile_free(&rf);
    }
    free(text);
    return 0;
}
