/*
 * events — see include/events.h.
 */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The process's configuration (events_init), or NULL: no events. */
static const struct config *cfg;

void events_init(const struct config *c) { cfg = c; }

/* Append `s` to buf as a JSON string body (quotes, backslashes and
 * control characters escaped). */
static size_t json_str(char *buf, size_t n, size_t o, const char *s)
{
    for (; s && *s && o + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(buf + o, n - o, "\\u%04x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    return o;
}

static size_t field(char *buf, size_t n, size_t o, const char *key, const char *val)
{
    if (o + 1 >= n)
        return o;
    o += (size_t)snprintf(buf + o, n - o, ",\"%s\":\"", key);
    if (o >= n) /* truncated: snprintf counts what did not fit */
        o = n - 1;
    o = json_str(buf, n, o, val ? val : "");
    if (o + 1 < n)
        buf[o++] = '"';
    return o;
}

void events_emit(const char *event, const char *db, const char *versions, const char *detail)
{
    if (!cfg || !cfg->events[0])
        return;
    int saved = errno;
    static const char *const locks[] = {"xact", "session", "off"};
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char buf[2048];
    size_t o = (size_t)snprintf(buf, sizeof buf, "{\"pid\":%ld,\"time\":%lld.%06ld",
                                (long)getpid(), (long long)ts.tv_sec, ts.tv_nsec / 1000);
    o = field(buf, sizeof buf, o, "host", host);
    o = field(buf, sizeof buf, o, "event", event);
    o = field(buf, sizeof buf, o, "db", db);
    o = field(buf, sizeof buf, o, "lock", locks[cfg->lock]);
    o = field(buf, sizeof buf, o, "versions", versions);
    o = field(buf, sizeof buf, o, "detail", detail);
    if (o + 2 >= sizeof buf)
        o = sizeof buf - 3;
    buf[o++] = '}';
    buf[o++] = '\n';
    /* O_NOFOLLOW: a symlink planted at the path is not followed */
    int fd = open(cfg->events, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        static int warned;
        if (!warned++)
            log_warn("events: cannot open %s: %s", cfg->events, strerror(errno));
        errno = saved;
        return;
    }
    ssize_t w = write(fd, buf, o);
    (void)w;
    close(fd);
    errno = saved;
}
