/* libFuzzer: the alembic.ini and pyproject.toml readers (ini.c's ini_get,
 * heads.c's heads_pyproject_script_location and heads_interpolate).
 *
 * Input: the first line is the `here` directory (the ini file's folder,
 * up to PATH_MAX in real use), the rest is the file's text, read as an
 * alembic.ini and as a pyproject.toml.  Oracles besides the sanitizers:
 * a value read from the text is never longer than the text; an
 * interpolated value is exactly as long as the rule says. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "heads.h"
#include "ini.h"

static size_t count(const char *s, const char *needle)
{
    size_t k = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        k++;
    return k;
}

/* Length heads_interpolate must produce for `v` (that it accepted). */
static size_t interpolated_len(const char *v, size_t here_len)
{
    size_t n = 0;
    for (const char *p = v; *p;) {
        if (strncmp(p, "%(here)s", 8) == 0) {
            n += here_len;
            p += 8;
        } else if (p[0] == '%' && p[1] == '%') {
            n++;
            p += 2;
        } else {
            n++;
            p++;
        }
    }
    return n;
}

static void check_value(const char *text, const char *here, char *v)
{
    if (!v)
        return;
    if (strlen(v) > strlen(text))
        abort(); /* a value longer than the text it was read from */
    char err[256] = "";
    char *o = heads_interpolate(v, here, err, sizeof err);
    if (o) {
        if (strlen(o) != interpolated_len(v, strlen(here)))
            abort();
        if (count(v, "%(here)s") == 0 && !strchr(v, '%') && strcmp(o, v) != 0)
            abort(); /* nothing to interpolate: unchanged */
        free(o);
    } else if (!err[0]) {
        abort(); /* refused without saying why */
    }
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_cstr(data, size);
    if (!buf)
        return 0;
    char *nl = memchr(buf, '\n', size);
    const char *text = nl ? nl + 1 : buf;
    char here[PATH_MAX];
    size_t hl = nl ? (size_t)(nl - buf) : 0;
    if (hl >= sizeof here)
        hl = sizeof here - 1;
    memcpy(here, buf, hl);
    here[hl] = '\0';
    if (strlen(here) != hl) /* a NUL in the first line: use what precedes it */
        hl = strlen(here);

    static const char *const keys[] = {"script_location", "version_locations",
                                       "version_path_separator", "recursive_version_locations"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        check_value(text, here, ini_get(text, "alembic", keys[i]));
    check_value(text, here, ini_get(text, "", ""));
    check_value(text, here, heads_pyproject_script_location(text));
    char err[256] = "";
    char *o = heads_interpolate(text, here, err, sizeof err);
    free(o);
    free(buf);
    return 0;
}
