/* libFuzzer: the statement classifier (first byte picks the table name). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "sqlclass.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (!text)
        return 0;
    static const char *const tables[][2] = {
        {"", "alembic_version"}, {"public", "alembic_version"}, {"we\"ird;schema", "v\"t"}};
    const char *const *t = tables[size ? data[0] % 3 : 0];
    struct sqlclass c;
    sqlclass_classify(text, t[0], t[1], &c);
    char tag[64];
    sqlclass_verb(text, tag, sizeof tag);
    sqlclass_mentions(text, t[1]);
    (void)sqlclass_deallocate(text); /* run for real in a stand-in: must only ever match one statement */
    free(text);
    return 0;
}
