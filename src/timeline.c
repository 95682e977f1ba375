/*
 * timeline — see include/timeline.h.  The input is the shim's own
 * JSON-lines format, so the reader only looks for its known keys.
 */
#include "timeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 100000
#define MAX_LANES 4096

struct event {
    long pid;
    double t;
    char host[64];
    char name[24];
};

struct lane {
    long pid;
    char host[64];
    double first;
    size_t *idx; /* events of this lane, in time order */
    size_t n;
};

/* The string value of "key":"..." in a line (no escapes in the keys we
 * read but host, which we copy verbatim up to the closing quote). */
static bool get_str(const char *line, const char *key, char *out, size_t n)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return false;
    p += strlen(pat);
    size_t o = 0;
    while (*p && *p != '"' && o + 1 < n) {
        if (*p == '\\' && p[1])
            p++;
        out[o++] = *p++;
    }
    out[o] = '\0';
    return *p == '"';
}

static bool get_num(const char *line, const char *key, double *out)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return false;
    char *end;
    *out = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

static struct event *events;
static size_t nevents;

static int by_time(const void *a, const void *b)
{
    double x = events[*(const size_t *)a].t, y = events[*(const size_t *)b].t;
    return x < y ? -1 : x > y;
}

static int lane_by_first(const void *a, const void *b)
{
    double x = ((const struct lane *)a)->first, y = ((const struct lane *)b)->first;
    return x < y ? -1 : x > y;
}

/* What a process is doing after `ev`. */
static const char *state_after(const char *ev)
{
    if (!strcmp(ev, "connect"))
        return "connecting";
    if (!strcmp(ev, "waiting"))
        return "waiting";
    if (!strcmp(ev, "leading"))
        return "leading";
    if (!strcmp(ev, "guard"))
        return NULL; /* a marker, no change */
    return "proceeding";
}

static const char *colour(const char *state)
{
    if (!strcmp(state, "connecting"))
        return "#b0b0b0";
    if (!strcmp(state, "waiting"))
        return "#f0ad4e";
    if (!strcmp(state, "leading"))
        return "#d9534f";
    return "#5cb85c";
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

bool timeline_render(const char *in, const char *out, char *err, size_t errsz)
{
    FILE *f = fopen(in, "r");
    if (!f) {
        snprintf(err, errsz, "%s: %s", in, strerror(errno));
        return false;
    }
    free(events);
    events = NULL;
    nevents = 0;
    size_t cap = 0;
    char line[4096];
    int lineno = 0;
    bool ok = true;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == '\0')
            continue;
        struct event e = {0};
        double pid;
        if (!get_num(line, "pid", &pid) || !get_num(line, "time", &e.t) ||
            !get_str(line, "event", e.name, sizeof e.name)) {
            snprintf(err, errsz, "%s:%d: not a migshim event (needs pid, time, event)", in, lineno);
            ok = false;
            break;
        }
        e.pid = (long)pid;
        get_str(line, "host", e.host, sizeof e.host);
        if (nevents == MAX_EVENTS) {
            snprintf(err, errsz, "%s:%d: more than %d events", in, lineno, MAX_EVENTS);
            ok = false;
            break;
        }
        if (nevents == cap) {
            cap = cap ? cap * 2 : 256;
            struct event *ne = realloc(events, cap * sizeof *ne);
            if (!ne) {
                snprintf(err, errsz, "out of memory");
                ok = false;
                break;
            }
            events = ne;
        }
        events[nevents++] = e;
    }
    fclose(f);
    if (ok && nevents == 0) {
        snprintf(err, errsz, "%s: no events", in);
        ok = false;
    }
    if (!ok)
        return false;

    /* lanes */
    size_t *order = malloc(nevents * sizeof *order);
    struct lane *lanes = calloc(MAX_LANES, sizeof *lanes);
    size_t nlanes = 0;
    if (!order || !lanes) {
        free(order);
        free(lanes);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    for (size_t i = 0; i < nevents; i++)
        order[i] = i;
    qsort(order, nevents, sizeof *order, by_time);
    double t0 = events[order[0]].t, t1 = events[order[nevents - 1]].t;
    for (size_t k = 0; k < nevents; k++) {
        struct event *e = &events[order[k]];
        size_t l = 0;
        while (l < nlanes && !(lanes[l].pid == e->pid && !strcmp(lanes[l].host, e->host)))
            l++;
        if (l == nlanes) {
            if (nlanes == MAX_LANES)
                continue;
            lanes[nlanes].pid = e->pid;
            snprintf(lanes[nlanes].host, sizeof lanes[nlanes].host, "%s", e->host);
            lanes[nlanes].first = e->t;
            lanes[nlanes].idx = malloc(nevents * sizeof(size_t));
            if (!lanes[nlanes].idx)
                break;
            nlanes++;
        }
        lanes[l].idx[lanes[l].n++] = order[k];
    }
    qsort(lanes, nlanes, sizeof *lanes, lane_by_first);

    double span = t1 - t0;
    if (span < 0.1)
        span = 0.1;
    double tend = t0 + span * 1.08;
    const int left = 190, width = 860, lane_h = 22, top = 60;
    int height = top + (int)nlanes * lane_h + 40;
    FILE *o = fopen(out, "w");
    if (!o) {
        snprintf(err, errsz, "%s: %s", out, strerror(errno));
        ok = false;
        goto done;
    }
    fprintf(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n",
            left + width + 20, height);
    fprintf(o, "<title>migshim start-up timeline: %zu processes, %.3f s</title>\n", nlanes, t1 - t0);
    fprintf(o, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(o, "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Fleet start-up: %zu "
               "processes over %.3f s</text>\n", nlanes, t1 - t0);
    static const char *const legend[] = {"connecting", "waiting", "leading", "proceeding"};
    for (int i = 0; i < 4; i++) {
        fprintf(o, "<rect x=\"%d\" y=\"30\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                   "<text x=\"%d\" y=\"41\">%s%s</text>\n",
                10 + i * 150, colour(legend[i]), 26 + i * 150, legend[i],
                !strcmp(legend[i], "leading") ? " (migrating)" : "");
    }
    fprintf(o, "<path d=\"M %d %d l 6 -6 l 6 6 l -6 6 z\" fill=\"black\"/><text x=\"%d\" y=\"41\">guard mapped a race</text>\n",
            10 + 4 * 150, 36, 26 + 4 * 150);
    double scale = width / (tend - t0);
    for (size_t l = 0; l < nlanes; l++) {
        struct lane *ln = &lanes[l];
        int y = top + (int)l * lane_h;
        fprintf(o, "<g class=\"lane\" data-pid=\"%ld\" data-host=\"", ln->pid);
        xml_text(o, ln->host);
        fprintf(o, "\">\n<text x=\"10\" y=\"%d\">pid %ld@", y + 15, ln->pid);
        xml_text(o, ln->host);
        fprintf(o, "</text>\n");
        const char *state = NULL;
        double since = 0;
        for (size_t k = 0; k <= ln->n; k++) {
            struct event *e = k < ln->n ? &events[ln->idx[k]] : NULL;
            double t = e ? e->t : tend;
            const char *next = e ? state_after(e->name) : NULL;
            if (e && !next) { /* guard marker */
                int x = left + (int)((e->t - t0) * scale);
                fprintf(o, "<path class=\"guard\" d=\"M %d %d l 6 -6 l 6 6 l -6 6 z\" fill=\"black\">"
                           "<title>guard at +%.3f s</title></path>\n", x - 6, y + 10, e->t - t0);
                continue;
            }
            if (state && (!e || strcmp(next, state) != 0)) {
                int x0 = left + (int)((since - t0) * scale), x1 = left + (int)((t - t0) * scale);
                fprintf(o, "<rect class=\"%s\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
                           "<title>%s +%.3f s to +%.3f s</title></rect>\n",
                        state, x0, y + 3, x1 - x0 > 1 ? x1 - x0 : 1,
                        !strcmp(state, "proceeding") ? 8 : 16, colour(state), state, since - t0, t - t0);
            }
            if (e && (!state || strcmp(next, state) != 0)) {
                state = next;
                since = e->t;
            }
        }
        fprintf(o, "</g>\n");
    }
    /* time axis */
    int ay = top + (int)nlanes * lane_h + 10;
    fprintf(o, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, ay, left + width, ay);
    /* ticks at 1, 2 or 5 times a power of ten, at most ~10 of them */
    double step = 0.001;
    for (double decade = 0.001; (tend - t0) / step > 10; decade *= 10) {
        static const double mult[] = {1, 2, 5};
        for (int i = 0; i < 3 && (tend - t0) / step > 10; i++)
            step = mult[i] * decade;
    }
    for (double t = 0; t <= tend - t0 + 1e-9; t += step) {
        int x = left + (int)(t * scale);
        fprintf(o, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%g s</text>\n",
                x, ay, x, ay + 4, x, ay + 18, t);
    }
    fprintf(o, "</svg>\n");
    if (fclose(o) != 0) {
        snprintf(err, errsz, "%s: %s", out, strerror(errno));
        ok = false;
    }
done:
    for (size_t l = 0; l < nlanes; l++)
        free(lanes[l].idx);
    free(lanes);
    free(order);
    return ok;
}
