/*
 * sqlclass — cheap, bounded classification of the statements an app sends.
 *
 * Only the first SQLCLASS_SCAN_MAX bytes of a statement are looked at:
 * version-table statements are short, and a 10 MB INSERT must cost no more
 * than a short one.
 */
#ifndef MIGSHIM_SQLCLASS_H
#define MIGSHIM_SQLCLASS_H

#include <stdbool.h>

#define SQLCLASS_SCAN_MAX 65536

/*
 * True when `sql` mentions `name` as a whole word, case-insensitively:
 * unquoted or double-quoted identifier (schema-qualified or not) or a
 * string literal ('alembic_version', as Alembic's has_table query uses).
 * Over-matching is harmless to the callers; under-matching is not.
 *
 *   sqlclass_mentions("INSERT INTO \"Alembic_Version\" ...", "alembic_version") -> true
 *   sqlclass_mentions("SELECT * FROM alembic_versions", "alembic_version")      -> false
 */
bool sqlclass_mentions(const char *sql, const char *name);

#endif
