/*
 * events — structured start-up events for the timeline picture.
 *
 * With `events = "path"` (MIGSHIM_EVENTS) every process appends one JSON
 * object per line to the file: {"pid":..,"host":..,"time":<unix seconds>,
 * "event":..,"db":..,"lock":..,"versions":..,"detail":..}.  Each line is one
 * O_APPEND write(2), so the lines of a fleet never mix.  `migshim timeline
 * FILE -o start.svg` draws them.
 *
 * Events: connect, at_head, ahead, unknown, waiting, leading, migrated,
 * proceed, timeout, lapsed, ungated, guard.
 */
#ifndef MIGSHIM_EVENTS_H
#define MIGSHIM_EVENTS_H

#include "config.h"

/* Take the settings events are written with (`events`, the path; `lock`,
 * each line's "lock"): `cfg` must stay valid and unchanged for the life of
 * the process (src/shim.c passes the process's configuration once it is
 * final).  Before it, every events_emit() is a no-op. */
void events_init(const struct config *cfg);

/* Append one event (a no-op unless `events` is set).  `versions` and
 * `detail` may be NULL.  errno is preserved. */
void events_emit(const char *event, const char *db, const char *versions, const char *detail);

#endif
