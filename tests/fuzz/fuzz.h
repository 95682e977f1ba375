/*
 * fuzz.h — what every libFuzzer target here shares.
 *
 * The code under test reads C strings; libFuzzer hands out a byte range.
 */
#ifndef MIGSHIM_FUZZ_H
#define MIGSHIM_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry point, which every target defines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A malloc'd, NUL-terminated copy of the input (free it), or NULL. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
    }
    return s;
}

#endif
