/*
 * heads: the revision-file parser (every form Alembic writes, broken and
 * hostile files) and the heads computation.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "heads.h"
#include "ini.h"

static struct revfile parse_ok(const char *src)
{
    struct revfile rf;
    int line = 0;
    char err[256] = "";
    int r = heads_parse_revision(src, &rf, &line, err, sizeof err);
    cr_assert_eq(r, 1, "parse failed (line %d): %s\n%s", line, err, src);
    return rf;
}

static void parse_bad(const char *src, int want_line, const char *want_err)
{
    struct revfile rf;
    int line = 0;
    char err[256] = "";
    int r = heads_parse_revision(src, &rf, &line, err, sizeof err);
    cr_assert_eq(r, -1, "expected a parse error for:\n%s", src);
    cr_assert_eq(line, want_line, "line %d, want %d (%s)", line, want_line, err);
    cr_assert(strstr(err, want_err), "error '%s' lacks '%s'", err, want_err);
}

Test(revision, plain_single_quotes)
{
    struct revfile rf = parse_ok("revision = 'abc123'\ndown_revision = 'def456'\n");
    cr_assert_str_eq(rf.revision, "abc123");
    cr_assert_eq(rf.ndown, 1);
    cr_assert_str_eq(rf.down[0], "def456");
    cr_assert_eq(rf.line, 1);
    heads_revfile_free(&rf);
}

Test(revision, double_quotes_annotations_and_docstring)
{
    const char *src =
        "\"\"\"add users\n"
        "\n"
        "Revision ID: 0001aaaa\n"
        "revision = 'not-this-one'\n"
        "Create Date: 2024-01-01\n"
        "\"\"\"\n"
        "from typing import Sequence, Union\n"
        "\n"
        "# revision identifiers, used by Alembic.\n"
        "revision: str = \"0001aaaa\"\n"
        "down_revision: Union[str, None] = None\n"
        "branch_labels: Union[str, Sequence[str], None] = ('x',)\n"
        "depends_on: Union[str, Sequence[str], None] = 'zzz'\n";
    struct revfile rf = parse_ok(src);
    cr_assert_str_eq(rf.revision, "0001aaaa");
    cr_assert_eq(rf.ndown, 0);
    cr_assert_eq(rf.line, 10);
    heads_revfile_free(&rf);
}

Test(revision, merge_tuple_multiline_and_list)
{
    struct revfile rf = parse_ok("revision = 'm1'\ndown_revision = (\n    'a',  # first\n    \"b\",\n)\n");
    cr_assert_eq(rf.ndown, 2);
    cr_assert_str_eq(rf.down[0], "a");
    cr_assert_str_eq(rf.down[1], "b");
    heads_revfile_free(&rf);
    rf = parse_ok("down_revision = ['x', 'y']\nrevision = 'm2'  # trailing comment\n");
    cr_assert_eq(rf.ndown, 2);
    cr_assert_str_eq(rf.revision, "m2");
    heads_revfile_free(&rf);
}

Test(revision, indented_and_compared_assignments_are_not_module_level)
{
    struct revfile rf = parse_ok("def f():\n    revision = 'inner'\nif revision == 'x': pass\n"
                                 "revision = 'outer'\ndown_revision = None\n");
    cr_assert_str_eq(rf.revision, "outer");
    heads_revfile_free(&rf);
}

Test(revision, not_a_revision_file)
{
    struct revfile rf;
    int line = 0;
    char err[64];
    cr_assert_eq(heads_parse_revision("import os\nrevisions = 3\n", &rf, &line, err, sizeof err), 0);
    cr_assert_eq(heads_parse_revision("", &rf, &line, err, sizeof err), 0);
}

/* Several statements on one line, separated by ';' (issue 12: this was
 * "unparseable", which silently turned a whole fleet's target unknown). */
Test(revision, semicolons_join_statements)
{
    struct revfile rf = parse_ok("revision = \"x1\"; down_revision = None\n");
    cr_assert_str_eq(rf.revision, "x1");
    cr_assert_eq(rf.ndown, 0);
    cr_assert_eq(rf.line, 1);
    heads_revfile_free(&rf);
    rf = parse_ok("down_revision = ('a', 'b') ;  revision = 'm' ; # merge\n");
    cr_assert_str_eq(rf.revision, "m");
    cr_assert_eq(rf.ndown, 2);
    heads_revfile_free(&rf);
    parse_bad("revision = 'a'; revision = 'b'\ndown_revision = None\n", 1, "assigned twice");
}

Test(revision, broken_files)
{
    parse_bad("revision = 'a'\n", 1, "has no down_revision");
    parse_bad("revision = get_rev()\ndown_revision = None\n", 1, "quoted revision id");
    parse_bad("revision = 'a'\ndown_revision = ('b' 'c')\n", 2, "expected ','");
    parse_bad("revision = 'a'\ndown_revision = ('b',\n", 2, "expected a quoted revision id");
    parse_bad("x = 1\nrevision = None\ndown_revision = None\n", 2, "not None");
    parse_bad("revision = 'a'\nrevision = 'b'\ndown_revision = None\n", 2, "assigned twice");
    parse_bad("revision = 'a' + 'b'\ndown_revision = None\n", 1, "unexpected text");
    parse_bad("revision = 'has\\'escape'\ndown_revision = None\n", 1, "quoted revision id");
    parse_bad("revision = ''\ndown_revision = None\n", 1, "quoted revision id");
}

Test(revision, hostile_long_id_is_refused)
{
    char src[512];
    char id[200];
    memset(id, 'a', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    snprintf(src, sizeof src, "revision = '%s'\ndown_revision = None\n", id);
    parse_bad(src, 1, "at most 63");
}

static struct revfile rf_of(const char *rev, const char *d1, const char *d2)
{
    struct revfile rf = {0};
    snprintf(rf.revision, sizeof rf.revision, "%s", rev);
    rf.down = calloc(2, sizeof *rf.down);
    if (d1)
        snprintf(rf.down[rf.ndown++], HEADS_REV_MAX, "%s", d1);
    if (d2)
        snprintf(rf.down[rf.ndown++], HEADS_REV_MAX, "%s", d2);
    return rf;
}

Test(compute, linear_chain_has_one_head)
{
    struct revfile f[3] = {rf_of("c", "b", NULL), rf_of("a", NULL, NULL), rf_of("b", "a", NULL)};
    struct heads h = {0};
    char err[128];
    cr_assert(heads_compute(f, 3, &h, err, sizeof err), "%s", err);
    cr_assert(h.known && h.graph);
    cr_assert_eq(h.nheads, 1);
    cr_assert_str_eq(h.heads[0], "c");
    cr_assert_eq(h.nrevs, 3);
    cr_assert(heads_has_rev(&h, "a") && !heads_has_rev(&h, "zz"));
    heads_free(&h);
    for (int i = 0; i < 3; i++)
        heads_revfile_free(&f[i]);
}

Test(compute, two_heads_then_merge)
{
    struct revfile f[4] = {rf_of("a", NULL, NULL), rf_of("b1", "a", NULL), rf_of("b2", "a", NULL),
                           rf_of("m", "b1", "b2")};
    struct heads h = {0};
    char err[128];
    cr_assert(heads_compute(f, 3, &h, err, sizeof err), "%s", err);
    cr_assert_eq(h.nheads, 2);
    cr_assert_str_eq(h.heads[0], "b1");
    cr_assert_str_eq(h.heads[1], "b2");
    heads_free(&h);
    cr_assert(heads_compute(f, 4, &h, err, sizeof err), "%s", err);
    cr_assert_eq(h.nheads, 1);
    cr_assert_str_eq(h.heads[0], "m");
    heads_free(&h);
    for (int i = 0; i < 4; i++)
        heads_revfile_free(&f[i]);
}

Test(compute, duplicate_and_dangling_are_errors)
{
    struct revfile f[2] = {rf_of("a", NULL, NULL), rf_of("a", NULL, NULL)};
    struct heads h = {0};
    char err[128];
    cr_assert_not(heads_compute(f, 2, &h, err, sizeof err));
    cr_assert_str_eq(err, "revision 'a' is defined twice");
    heads_free(&h);
    struct revfile g[1] = {rf_of("b", "nope", NULL)};
    cr_assert_not(heads_compute(g, 1, &h, err, sizeof err));
    cr_assert_str_eq(err, "revision 'b' names unknown down_revision 'nope'");
    heads_free(&h);
    for (int i = 0; i < 2; i++)
        heads_revfile_free(&f[i]);
    heads_revfile_free(&g[0]);
}

/* --- finding the scripts: heads_load in a temporary working directory --- */

#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];
static char oldcwd[4096];

static void in_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/migshim-heads-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
    cr_assert(getcwd(oldcwd, sizeof oldcwd));
    cr_assert_eq(chdir(tmpdir), 0);
}

static void leave_tmpdir(void)
{
    cr_assert_eq(chdir(oldcwd), 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static void put(const char *path, const char *text)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void rev(const char *dir, const char *id, const char *down)
{
    char path[512], text[512];
    snprintf(path, sizeof path, "%s/%s_x.py", dir, id);
    snprintf(text, sizeof text, "\"\"\"r\"\"\"\nrevision = '%s'\ndown_revision = %s\n", id, down);
    put(path, text);
}

static struct heads load(const struct config *cfg)
{
    struct heads h;
    heads_load(cfg, &h);
    return h;
}

static void expect_heads(const struct heads *h, const char *want)
{
    cr_assert(h->known, "target unknown, want %s", want);
    char got[512] = "";
    for (size_t i = 0; i < h->nheads; i++) {
        strcat(got, i ? "," : "");
        strcat(got, h->heads[i]);
    }
    cr_assert_str_eq(got, want);
}

Test(discover, alembic_ini_here_and_default_versions, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = %(here)s/mig\nsqlalchemy.url = x\n");
    rev("mig/versions", "a1", "None");
    rev("mig/versions", "b2", "'a1'");
    put("mig/versions/__init__.py", "");
    put("mig/versions/helpers.py", "def f():\n    return 1\n");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    expect_heads(&h, "b2");
    cr_assert_eq(h.nrevs, 2);
    heads_free(&h);
}

Test(discover, relative_script_location_is_relative_to_cwd, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("conf/alembic.ini", "[alembic]\nscript_location = scripts\n");
    rev("scripts/versions", "r1", "None");
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.alembic_ini, sizeof cfg.alembic_ini, "conf/alembic.ini");
    struct heads h = load(&cfg);
    expect_heads(&h, "r1");
    heads_free(&h);
}

Test(discover, flask_migrate_layout, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("migrations/alembic.ini", "[alembic]\n# template used to generate migration files\n"
                                  "[loggers]\nkeys = root\n");
    rev("migrations/versions", "f1", "None");
    rev("migrations/versions", "f2", "\"f1\"");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    expect_heads(&h, "f2");
    heads_free(&h);
}

Test(discover, version_locations_with_separator_and_branches, .init = in_tmpdir,
     .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = %(here)s/s\n"
                       "version_locations = %(here)s/v1:%(here)s/v2\n"
                       "version_path_separator = os\n");
    rev("v1", "base", "None");
    rev("v2", "left", "'base'");
    rev("v2", "right", "'base'");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    cr_assert_eq(h.nheads, 2);
    cr_assert(heads_has_rev(&h, "left") && heads_has_rev(&h, "right"));
    heads_free(&h);
}

Test(discover, recursive_version_locations, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = s\nrecursive_version_locations = true\n");
    rev("s/versions", "top", "None");
    rev("s/versions/2024", "deep", "'top'");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    expect_heads(&h, "deep");
    heads_free(&h);
    /* not recursive: the nested revision is not seen */
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    h = load(&cfg);
    expect_heads(&h, "top");
    heads_free(&h);
}

Test(discover, pyproject_tool_alembic, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("pyproject.toml", "[project]\nname = \"x\"\n\n[tool.alembic]\nscript_location = \"%(here)s/al\"\n");
    rev("al/versions", "p1", "None");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    expect_heads(&h, "p1");
    heads_free(&h);
}

Test(discover, unknown_when_a_file_is_broken_or_missing, .init = in_tmpdir, .fini = leave_tmpdir)
{
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg); /* nothing at all */
    cr_assert_not(h.known);
    heads_free(&h);
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    rev("s/versions", "ok1", "None");
    put("s/versions/bad.py", "revision = 'b'\ndown_revision = compute()\n");
    h = load(&cfg);
    cr_assert_not(h.known);
    heads_free(&h);
    put("alembic.ini", "[alembic]\nscript_location = myapp:migrations\n");
    h = load(&cfg);
    cr_assert_not(h.known);
    heads_free(&h);
}

Test(discover, heads_key_wins, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    rev("s/versions", "ignored", "None");
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.heads, sizeof cfg.heads, "h1, h2");
    struct heads h = load(&cfg);
    expect_heads(&h, "h1,h2");
    cr_assert_not(h.graph);
    heads_free(&h);
}

/* --- reading a file: its limits, and what it leaves in malloc ---------------------- */

/* A revision file of exactly `size` bytes: the two assignments, then one
 * comment line filling the rest. */
static void rev_of_size(const char *path, const char *id, size_t size)
{
    char head[128];
    size_t h = (size_t)snprintf(head, sizeof head, "revision = '%s'\ndown_revision = None\n#", id);
    cr_assert(size > h + 1);
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(head, f);
    for (size_t n = h; n < size - 1; n++)
        fputc('x', f);
    fputc('\n', f);
    cr_assert_eq(ftell(f), (long)size);
    fclose(f);
}

Test(discover, revision_file_of_1_mib_is_read_one_byte_more_is_refused, .init = in_tmpdir,
     .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    put("s/versions/keep", "");
    struct config cfg;
    config_defaults(&cfg);
    rev_of_size("s/versions/a_x.py", "a1", 1 << 20);
    struct heads h = load(&cfg);
    expect_heads(&h, "a1");
    heads_free(&h);
    rev_of_size("s/versions/a_x.py", "a1", (1 << 20) + 1);
    h = load(&cfg);
    cr_assert_not(h.known, "a revision file over 1 MiB was read");
    heads_free(&h);
}

Test(discover, a_nul_byte_makes_no_text_file, .init = in_tmpdir, .fini = leave_tmpdir)
{
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    rev("s/versions", "ok1", "None");
    FILE *f = fopen("s/versions/nul_x.py", "w");
    cr_assert(f);
    fwrite("revision = 'n1'\ndown_revision = 'ok1'\n\0\n", 1, 39, f);
    fclose(f);
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    cr_assert_not(h.known, "a revision file holding a NUL byte was read");
    heads_free(&h);
}

/* A revision file that is a FIFO (or an alembic.ini that is one) must not
 * block the gate: open(2) of a FIFO without a writer waits for one
 * forever.  Only regular files are read; anything else makes the target
 * unknown with one line naming the file. */
Test(discover, a_fifo_among_the_scripts_makes_the_target_unknown_at_once, .init = in_tmpdir,
     .fini = leave_tmpdir, .timeout = 10)
{
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    rev("s/versions", "ok1", "None");
    cr_assert_eq(mkfifo("s/versions/pipe_x.py", 0644), 0);
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    cr_assert_not(h.known, "a FIFO among the revision files was read as one");
    heads_free(&h);
    unlink("s/versions/pipe_x.py");
    cr_assert_eq(mkfifo("fifo.ini", 0644), 0);
    snprintf(cfg.alembic_ini, sizeof cfg.alembic_ini, "fifo.ini");
    h = load(&cfg);
    cr_assert_not(h.known, "a FIFO as alembic.ini was read");
    heads_free(&h);
}

/* How many chunks malloc serves by mmap (glibc: mallinfo2's hblks). */
#include <malloc.h>
static size_t mmapped_chunks(void) { return mallinfo2().hblks; }
/* An allocation stored here is used: the compiler may not elide it. */
static void *volatile kept;

/* Reading the scripts must not retune the app's malloc: glibc raises its
 * mmap threshold to the size of an mmapped chunk freed (a 1 MiB read
 * buffer freed made every later allocation up to 1 MiB come from the
 * heap, and left the heap laid out so that libpq's per-result block cost
 * +211 instructions per statement: make bench, rows 1c/1ch).  A 256 KiB
 * allocation is still served by mmap after heads_load.  Skipped where
 * malloc is not glibc's at its defaults (sanitizers, valgrind,
 * MALLOC_MMAP_THRESHOLD_): a 512 KiB one must be mmapped first. */
Test(discover, reading_the_scripts_leaves_the_mmap_threshold_alone, .init = in_tmpdir,
     .fini = leave_tmpdir)
{
    size_t before = mmapped_chunks();
    void *probe = kept = malloc(512 << 10); /* freed only at the end: freeing it raises the threshold */
    if (!probe || mmapped_chunks() != before + 1) {
        free(probe);
        cr_skip_test("malloc does not serve 512 KiB by mmap here");
    }
    put("alembic.ini", "[alembic]\nscript_location = s\n");
    rev("s/versions", "a1", "None");
    rev("s/versions", "b2", "'a1'");
    struct config cfg;
    config_defaults(&cfg);
    struct heads h = load(&cfg);
    expect_heads(&h, "b2");
    heads_free(&h);
    size_t mid = mmapped_chunks();
    void *after = kept = malloc(256 << 10);
    bool by_mmap = after && mmapped_chunks() == mid + 1;
    free(after);
    free(probe);
    cr_assert(by_mmap, "after heads_load a 256 KiB malloc came from the heap: the mmap "
                       "threshold was raised");
}

/* --- the ini / pyproject readers --------------------------------------------------- */

Test(readers, interpolate_long_here_many_times)
{
    /* 11 x %(here)s with a 100-byte `here`, then 500 plain bytes: the
     * buffer was sized 2*len(v) + 4*len(here) + 1 = 1577 bytes and the
     * plain bytes after the last `here` were written unchecked (1601). */
    char here[101], v[8 * 11 + 500 + 1], err[256] = "";
    memset(here, 'h', 100);
    here[100] = '\0';
    v[0] = '\0';
    for (int i = 0; i < 11; i++)
        strcat(v, "%(here)s");
    memset(v + 88, 'a', 500);
    v[588] = '\0';
    char *o = heads_interpolate(v, here, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    cr_assert_eq(strlen(o), 11 * 100 + 500);
    cr_assert_eq(strspn(o, "h"), 1100);
    cr_assert_eq(strspn(o + 1100, "a"), 500);
    free(o);
}

Test(readers, interpolate_rules)
{
    char err[256] = "";
    char *o = heads_interpolate("%(here)s/m%%x", "/srv", err, sizeof err);
    cr_assert_str_eq(o, "/srv/m%x");
    free(o);
    o = heads_interpolate("%%(here)s", "/srv", err, sizeof err);
    cr_assert_str_eq(o, "%(here)s"); /* %% first: a literal */
    free(o);
    cr_assert_null(heads_interpolate("%(name)s", "/srv", err, sizeof err));
    cr_assert_str_eq(err, "unsupported interpolation in '%(name)s'");
}

Test(readers, ini_continuation_belongs_to_its_own_key)
{
    const char *ini = "[alembic]\nscript_location = mig\nversion_locations =\n    a\n    b\n"
                      "other =\n    not-ours\nrecursive_version_locations = true\n";
    char *v = ini_get(ini, "alembic", "script_location");
    cr_assert_str_eq(v, "mig");
    free(v);
    v = ini_get(ini, "alembic", "version_locations");
    cr_assert_str_eq(v, "\na\nb");
    free(v);
    /* a continuation of another key after ours is not appended to ours */
    v = ini_get("[alembic]\nscript_location = mig\nother =\n    junk\n", "alembic",
                      "script_location");
    cr_assert_str_eq(v, "mig");
    free(v);
    v = ini_get("[other]\nscript_location = no\n[alembic]\nscript_location : yes\n",
                      "alembic", "script_location");
    cr_assert_str_eq(v, "yes");
    free(v);
    cr_assert_null(ini_get("[alembic]\n# script_location = x\n", "alembic",
                                 "script_location"));
}

Test(readers, pyproject)
{
    char *v = heads_pyproject_script_location(
        "[project]\nscript_location = \"no\"\n[tool.alembic]\nscript_location = \"%(here)s/al\"\n");
    cr_assert_str_eq(v, "%(here)s/al");
    free(v);
    v = heads_pyproject_script_location("[tool.alembic]\nscript_location = 'lit'\n");
    cr_assert_str_eq(v, "lit"); /* a TOML literal string */
    free(v);
    /* another key that merely starts with the name, or no '=' */
    cr_assert_null(heads_pyproject_script_location(
        "[tool.alembic]\nscript_locations = \"x\"\nscript_location \"y\"\n"));
}

/* An unterminated docstring used to make every later line search the
 * whole rest of the text: 2 MiB of short lines took minutes.  Linear now. */
Test(revision, unterminated_docstring_is_linear, .timeout = 5)
{
    size_t lines = 1024 * 1024;
    char *src = malloc(4 + 2 * lines + 64);
    cr_assert_not_null(src);
    char *p = src;
    memcpy(p, "\"\"\"\n", 4);
    p += 4;
    for (size_t i = 0; i < lines; i++) {
        *p++ = 'a';
        *p++ = '\n';
    }
    strcpy(p, "revision = 'x'\ndown_revision = None\n");
    struct revfile rf;
    int line = 0;
    char err[256] = "";
    /* everything after the opening quotes is inside the docstring */
    cr_assert_eq(heads_parse_revision(src, &rf, &line, err, sizeof err), 0, "%s", err);
    free(src);
}
