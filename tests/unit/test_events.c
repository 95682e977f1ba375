/*
 * events: one JSON line per decision, whatever the length of what it
 * carries, and never through a symlink planted at the path.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events.h"
#include "shim.h"

static char dir[] = "/tmp/migshim-events-XXXXXX";
static char path[256];

extern char **environ;

static void setup(void)
{
    /* only this test's configuration (make check exports MIGSHIM_BUILD_DIR,
     * an unknown key to the shim, which would disable it) */
    for (size_t i = 0; environ[i];) {
        if (strncmp(environ[i], "MIGSHIM_", 8) == 0) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(environ[i], "="), environ[i]);
            unsetenv(name);
        } else {
            i++;
        }
    }
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/events.jsonl", dir);
    setenv("MIGSHIM_EVENTS", path, 1);
    setenv("MIGSHIM_LOG", "error", 1);
    cr_assert(shim_active());
}

static char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    *n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

Test(events, huge_fields_make_one_bounded_line, .init = setup)
{
    char *big = malloc(5000);
    memset(big, 'd', 4999);
    big[4999] = '\0';
    big[10] = '"'; /* escaped: two bytes */
    events_emit("connect", big, big, big);
    events_emit("leading", "small", "r1", NULL);
    size_t n = 0;
    char *text = slurp(path, &n);
    cr_assert(text);
    char *nl = strchr(text, '\n');
    cr_assert(nl, "no line");
    size_t first = (size_t)(nl - text) + 1;
    cr_assert_leq(first, 2048, "line of %zu bytes", first);
    cr_assert_eq(text[first - 2], '}', "not closed: ...%.20s", text + first - 22);
    cr_assert(strstr(text, "\"event\":\"connect\""));
    cr_assert(strstr(nl + 1, "\"event\":\"leading\""), "the next line is intact");
    cr_assert(strstr(nl + 1, "\"db\":\"small\""));
    free(text);
    free(big);
}

Test(events, a_symlink_at_the_path_is_not_followed, .init = setup)
{
    char target[300];
    snprintf(target, sizeof target, "%s/target", dir);
    int fd = open(target, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(symlink(target, path), 0);
    events_emit("connect", "db", NULL, NULL);
    struct stat st;
    cr_assert_eq(stat(target, &st), 0);
    cr_assert_eq(st.st_size, 0, "the symlink's target was written");
}
