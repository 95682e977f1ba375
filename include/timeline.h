/*
 * timeline — draw a fleet's start-up from the events file (events.h) as an
 * SVG: one lane per process, coloured by what it was doing — connecting,
 * waiting, leading (migrating), proceeding — with guard mappings marked.
 */
#ifndef MIGSHIM_TIMELINE_H
#define MIGSHIM_TIMELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"

/* Read JSON-lines events from `in`, write the SVG to `out`.  Returns false
 * with a one-line reason (naming the file and line) in err. */
bool timeline_render(const char *in, const char *out, char *err, size_t errsz) MUSTCHECK;

#endif
