/* libFuzzer: the env.py reader (the input is both env.py and its ini). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz.h"

#include "envpy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (!text)
        return 0;
    struct envpy_vt vt;
    envpy_read(text, text, &vt);
    free(text);
    return 0;
}
