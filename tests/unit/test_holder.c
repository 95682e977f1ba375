/*
 * The version-table name a leader publishes in its lock connection's
 * application_name for the waiters (holder.h, holder_mark_migrating_vt):
 * formatted within 63 bytes of printable ASCII, read back exactly.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "holder.h"

static void round_trip(const char *schema, const char *table, const char *want)
{
    char text[64], s[CONFIG_NAME_MAX] = "?", t[CONFIG_NAME_MAX] = "?";
    cr_assert(holder_vt_format(schema, table, text, sizeof text), "%s.%s", schema, table);
    cr_assert_str_eq(text, want);
    cr_assert(holder_vt_parse(text, s, sizeof s, t, sizeof t), "%s", text);
    cr_assert_str_eq(s, schema);
    cr_assert_str_eq(t, table);
}

Test(holder, round_trips)
{
    round_trip("", "my_version", "my_version");
    round_trip("ops", "app_versions", "ops.app_versions");
    round_trip("Ops", "My Version", "\"Ops\".\"My Version\"");
    round_trip("", "a\"b", "\"a\"\"b\"");
    round_trip("s.x", "t", "\"s.x\".t");
    round_trip("", "v2$", "\"v2$\"");
}

Test(holder, what_does_not_fit_is_not_published)
{
    char text[64];
    char long_name[70];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    cr_assert_not(holder_vt_format("", long_name, text, sizeof text));
    cr_assert_not(holder_vt_format("", "caf\xc3\xa9", text, sizeof text)); /* not ASCII */
    cr_assert_not(holder_vt_format("", "a\tb", text, sizeof text));
    cr_assert_not(holder_vt_format("ops", "", text, sizeof text));
}

Test(holder, parse_rejects_malformed)
{
    char s[CONFIG_NAME_MAX], t[CONFIG_NAME_MAX];
    cr_assert_not(holder_vt_parse("", s, sizeof s, t, sizeof t));
    cr_assert_not(holder_vt_parse("\"open", s, sizeof s, t, sizeof t));
    cr_assert_not(holder_vt_parse("ops.", s, sizeof s, t, sizeof t));
    cr_assert_not(holder_vt_parse("Upper", s, sizeof s, t, sizeof t)); /* plain is lower case */
    cr_assert(holder_vt_parse("v trailing", s, sizeof s, t, sizeof t)); /* ends at a space */
    cr_assert_str_eq(t, "v");
    cr_assert_str_eq(s, "");
}
