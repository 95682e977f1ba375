/*
 * envpy: the version table an Alembic env.py names -- literals, module
 * constants, config.get_main_option, None, and what is refused.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envpy.h"

static struct envpy_vt rd(const char *text, const char *ini)
{
    struct envpy_vt vt;
    envpy_read(text, ini, &vt);
    return vt;
}

/* Alembic's generated env.py with the argument added: both modes. */
static const char *const STOCK =
    "from logging.config import fileConfig\n"
    "from alembic import context\n"
    "config = context.config\n"
    "target_metadata = None\n"
    "\n"
    "def run_migrations_offline() -> None:\n"
    "    \"\"\"Run migrations in 'offline' mode.\n"
    "    context.configure(version_table='not_this_one')  # in a docstring\n"
    "    \"\"\"\n"
    "    url = config.get_main_option(\"sqlalchemy.url\")\n"
    "    context.configure(\n"
    "        url=url,\n"
    "        target_metadata=target_metadata,\n"
    "        literal_binds=True,\n"
    "        dialect_opts={\"paramstyle\": \"named\"},\n"
    "        version_table=\"my_version\",  # shared database\n"
    "    )\n"
    "\n"
    "def run_migrations_online() -> None:\n"
    "    with connectable.connect() as connection:\n"
    "        context.configure(\n"
    "            connection=connection, target_metadata=target_metadata,\n"
    "            version_table=\"my_version\",\n"
    "        )\n";

Test(envpy, literal_in_both_modes)
{
    struct envpy_vt vt = rd(STOCK, NULL);
    cr_assert_eq(vt.table.state, ENVPY_VALUE);
    cr_assert_str_eq(vt.table.value, "my_version");
    cr_assert_eq(vt.table.line, 16);
    cr_assert_str_eq(vt.table.how, "a literal");
    cr_assert_eq(vt.schema.state, ENVPY_ABSENT);
}

Test(envpy, module_constants)
{
    struct envpy_vt vt = rd("VERSION_TABLE = 'app_version'\n"
                            "SCHEMA: str = \"app\"  # annotated\n"
                            "def f():\n"
                            "    VERSION_TABLE = 'local, not module level'\n"
                            "    context.configure(connection=c, version_table=VERSION_TABLE,\n"
                            "                      version_table_schema=SCHEMA)\n",
                            NULL);
    cr_assert_eq(vt.table.state, ENVPY_VALUE);
    cr_assert_str_eq(vt.table.value, "app_version");
    cr_assert_str_eq(vt.table.how, "VERSION_TABLE");
    cr_assert_eq(vt.schema.state, ENVPY_VALUE);
    cr_assert_str_eq(vt.schema.value, "app");
    cr_assert_eq(vt.schema.line, 6);
}

Test(envpy, get_main_option)
{
    const char *ini = "[alembic]\nscript_location = migrations\nversion_table = ini_version\n";
    struct envpy_vt vt = rd("context.configure(connection=c,\n"
                            "    version_table=config.get_main_option(\"version_table\"),\n"
                            "    version_table_schema=config.get_main_option('vt_schema', 'dflt'))\n",
                            ini);
    cr_assert_eq(vt.table.state, ENVPY_VALUE);
    cr_assert_str_eq(vt.table.value, "ini_version");
    cr_assert_str_eq(vt.table.how, "get_main_option(\"version_table\")");
    cr_assert_eq(vt.schema.state, ENVPY_VALUE); /* missing in the ini: the default */
    cr_assert_str_eq(vt.schema.value, "dflt");
    vt = rd("context.configure(version_table=config.get_main_option('missing'))", ini);
    cr_assert_eq(vt.table.state, ENVPY_NONE);
    vt = rd("context.configure(version_table=config.get_main_option('version_table'))", NULL);
    cr_assert_eq(vt.table.state, ENVPY_NONE);
}

Test(envpy, none_and_absent)
{
    struct envpy_vt vt = rd("context.configure(connection=c, version_table_schema=None)", NULL);
    cr_assert_eq(vt.table.state, ENVPY_ABSENT);
    cr_assert_eq(vt.schema.state, ENVPY_NONE);
    vt = rd("", NULL);
    cr_assert_eq(vt.table.state, ENVPY_ABSENT);
    /* Flask-Migrate's env.py: **conf_args, nothing to read */
    vt = rd("context.configure(connection=connection, target_metadata=get_metadata(), "
            "**conf_args)", NULL);
    cr_assert_eq(vt.table.state, ENVPY_ABSENT);
    /* comments, strings and other calls do not count */
    vt = rd("# context.configure(version_table='x')\n"
            "s = \"context.configure(version_table='y')\"\n"
            "other.configuration(version_table='z')\n"
            "configure(version_table='w')\n", NULL);
    cr_assert_eq(vt.table.state, ENVPY_ABSENT);
}

Test(envpy, what_cannot_be_read)
{
    struct envpy_vt vt = rd("context.configure(version_table=os.environ['VT'])", NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
    cr_assert_str_eq(vt.table.how, "os.environ['VT']");
    vt = rd("context.configure(version_table=f'{app}_version')", NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
    vt = rd("context.configure(version_table=UNDEFINED_NAME)", NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
    vt = rd("context.configure(version_table='a' + 'b')", NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
    /* two calls that disagree */
    vt = rd("context.configure(version_table='a')\ncontext.configure(version_table='b')\n", NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
    cr_assert_str_eq(vt.table.how, "configure() calls that disagree");
    /* too long for a PostgreSQL name */
    char big[400];
    memset(big, 'v', sizeof big);
    memcpy(big, "context.configure(version_table='", 33);
    strcpy(big + 300, "')");
    vt = rd(big, NULL);
    cr_assert_eq(vt.table.state, ENVPY_UNREADABLE);
}

Test(envpy, literals_and_prefixes)
{
    struct envpy_vt vt = rd("context.configure(version_table=r'raw\\_v', "
                            "version_table_schema=\"\"\"tri\"\"\")", NULL);
    cr_assert_str_eq(vt.table.value, "raw\\_v");
    cr_assert_str_eq(vt.schema.value, "tri");
    vt = rd("context.configure(version_table='a' 'b')", NULL); /* adjacent literals join */
    cr_assert_str_eq(vt.table.value, "ab");
    vt = rd("context.configure(version_table = 'spaced' )", NULL);
    cr_assert_str_eq(vt.table.value, "spaced");
    /* an unterminated string or call does not crash or invent */
    vt = rd("context.configure(version_table='open", NULL);
    cr_assert_neq(vt.table.state, ENVPY_VALUE);
    vt = rd("context.configure(version_table=", NULL);
    cr_assert_eq(vt.table.state, ENVPY_ABSENT);
}

/* Reading env.py must leave no hole in the app's heap: the token array of
 * a 3.6 KiB env.py (the demo's) grown by realloc and freed at the end
 * left free chunks that libpq's per-result block was then carved from on
 * every statement of the app (make bench, row 1c: +209 instructions per
 * statement).  The free bytes in the heap outside its top chunk must not
 * grow by more than a few small strings.  Skipped where malloc is not
 * glibc's at its defaults (sanitizers, valgrind). */
#include <malloc.h>
static size_t heap_holes(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.fordblks - m.keepcost;
}

Test(envpy, reading_a_long_env_py_leaves_no_hole_in_the_heap)
{
    if (getenv("LD_PRELOAD") || getenv("ASAN_OPTIONS") || getenv("MALLOC_MMAP_THRESHOLD_"))
        cr_skip_test("malloc is not glibc's at its defaults here");
    static char text[64 << 10];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "%s", STOCK);
    for (int i = 0; i < 1500 && n + 64 < sizeof text; i++) /* ~6000 tokens */
        n += (size_t)snprintf(text + n, sizeof text - n, "x%d = (%d, %d)\n", i, i, i);
    void *pin = malloc(64); /* keeps what follows off the top chunk's edge */
    size_t before = heap_holes();
    struct envpy_vt vt = rd(text, NULL);
    void *pin2 = malloc(64);
    size_t after = heap_holes();
    free(pin2);
    free(pin);
    cr_assert_str_eq(vt.table.value, "my_version");
    cr_assert(after <= before + 4096, "reading env.py left %zu bytes of holes in the heap",
              after - before);
}
