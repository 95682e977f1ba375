/*
 * django: the target file (parsing, the key against the disk, atomic
 * writes), the read expression, and asking a Python that fails.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "django.h"

static char dir[] = "/tmp/migshim-django-XXXXXX";

static void setup(void) { cr_assert(mkdtemp(dir)); }

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(django, .init = setup, .fini = teardown);

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

static long long mtime_ns(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

Test(django, parses_nodes_in_order_and_counts_them)
{
    struct django_target t;
    char err[256];
    const char *text = "migshim-django-target 1\n"
                       "node auth 0001_initial\n"
                       "node shop 0002_data\n"
                       "end 2\n";
    cr_assert_eq(django_parse_target(text, true, &t, err, sizeof err), 1, "%s", err);
    cr_assert(t.known);
    cr_assert_eq(t.n, 2);
    cr_assert_str_eq(t.nodes[0].app, "auth");
    cr_assert_str_eq(t.nodes[0].name, "0001_initial");
    cr_assert_str_eq(t.nodes[1].app, "shop");
    cr_assert_str_eq(t.nodes[1].name, "0002_data");
    django_target_free(&t);
}

Test(django, an_empty_graph_is_a_known_target)
{
    struct django_target t;
    char err[256];
    cr_assert_eq(django_parse_target("migshim-django-target 1\nend 0\n", true, &t, err, sizeof err), 1);
    cr_assert(t.known);
    cr_assert_eq(t.n, 0);
    char *e = django_read_expr(&t);
    cr_assert_str_eq(e, "'<table/>'::text"); /* present, nothing missing: at target */
    free(e);
    django_target_free(&t);
}

Test(django, malformed_texts_name_the_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "empty"},
        {"something else\n", "line 1: not a migshim Django target (expected \"migshim-django-target 1\")"},
        {"migshim-django-target 1\nnode shop\nend 1\n", "line 2: malformed node record"},
        {"migshim-django-target 1\nnode shop 0001 x\nend 1\n", "line 2: malformed node record"},
        {"migshim-django-target 1\nnode sh'op 0001\nend 1\n", "line 2: malformed node record"},
        {"migshim-django-target 1\nnode shop 0001\n", "truncated (no end record for 1 nodes)"},
        {"migshim-django-target 1\nnode shop 0001\nend 2\n", "truncated (no end record for 1 nodes)"},
        {"migshim-django-target 1\nfile 12 /x\nend 0\n", "line 2: malformed file record"},
        {"migshim-django-target 1\ndir x /x\nend 0\n", "line 2: malformed dir record"},
        {"migshim-django-target 1\nwhat\nend 0\n", "line 2: unknown record"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct django_target t;
        char err[256] = "";
        cr_assert_eq(django_parse_target(cases[i].text, false, &t, err, sizeof err), -1, "case %zu", i);
        cr_assert_not(t.known);
        cr_assert_str_eq(err, cases[i].want, "case %zu: %s", i, err);
    }
}

Test(django, the_key_goes_stale_when_a_migration_file_changes)
{
    char mig[300], text[1024], err[512];
    snprintf(mig, sizeof mig, "%s/0001_initial.py", dir);
    write_file(mig, "# one\n");
    snprintf(text, sizeof text,
             "migshim-django-target 1\ndir %lld %s\nfile %lld %lld %s\nnode shop 0001_initial\nend 1\n",
             mtime_ns(dir), dir, mtime_ns(mig), 6LL, mig);
    struct django_target t;
    cr_assert_eq(django_parse_target(text, true, &t, err, sizeof err), 1, "%s", err);
    django_target_free(&t);

    /* same size, new mtime */
    struct timeval tv[2] = {{1000, 0}, {1000, 0}};
    cr_assert_eq(utimes(mig, tv), 0);
    cr_assert_eq(django_parse_target(text, true, &t, err, sizeof err), 0);
    cr_assert_not(t.known);
    char want[400];
    snprintf(want, sizeof want, "%s changed", mig);
    cr_assert_str_eq(err, want);
    /* without the check it is used as it is (the command line's own output) */
    cr_assert_eq(django_parse_target(text, false, &t, err, sizeof err), 1);
    django_target_free(&t);
}

Test(django, a_new_file_in_a_migrations_folder_makes_it_stale)
{
    char text[1024], err[512], extra[300];
    struct timeval tv[2] = {{2000, 0}, {2000, 0}};
    cr_assert_eq(utimes(dir, tv), 0);
    snprintf(text, sizeof text, "migshim-django-target 1\ndir %lld %s\nend 0\n", mtime_ns(dir), dir);
    struct django_target t;
    cr_assert_eq(django_parse_target(text, true, &t, err, sizeof err), 1, "%s", err);
    django_target_free(&t);
    snprintf(extra, sizeof extra, "%s/0002_new.py", dir);
    write_file(extra, "x = 1\n");
    cr_assert_eq(django_parse_target(text, true, &t, err, sizeof err), 0);
}

Test(django, the_read_quotes_every_name_twice)
{
    struct django_target t;
    char err[256];
    cr_assert_eq(django_parse_target("migshim-django-target 1\nnode shop 0001_initial\nend 1\n", false,
                                     &t, err, sizeof err), 1);
    char *e = django_read_expr(&t);
    cr_assert(e);
    /* the node is a literal inside the literal query_to_xml runs */
    cr_assert(strstr(e, "(E''shop'',E''0001_initial'')"), "%s", e);
    cr_assert(strstr(e, "c.relname = 'django_migrations'"), "%s", e);
    cr_assert(strstr(e, "LIMIT 9"), "%s", e);
    free(e);
    django_target_free(&t);
}

Test(django, writes_are_atomic_and_refuse_a_symlink_target_dir_entry)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/t.target", dir);
    cr_assert(django_write_target(path, "migshim-django-target 1\nend 0\n", err, sizeof err), "%s", err);
    FILE *f = fopen(path, "r");
    char buf[128] = "";
    cr_assert(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cr_assert_str_eq(buf, "migshim-django-target 1\nend 0\n");
    /* nothing left behind */
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s/t.target.%ld.tmp", dir, (long)getpid());
    cr_assert_neq(access(tmp, F_OK), 0);
    /* a folder that does not exist: a clear error naming the path */
    snprintf(path, sizeof path, "%s/no/such/t.target", dir);
    cr_assert_not(django_write_target(path, "x", err, sizeof err));
    cr_assert(strstr(err, "No such file or directory"), "%s", err);
}

Test(django, a_python_that_cannot_list_says_why_in_one_line)
{
    char err[512];
    char *t = django_compute("/nonexistent/python3", dir, err, sizeof err);
    cr_assert_null(t);
    cr_assert(strstr(err, "cannot run /nonexistent/python3 (django_python)"), "%s", err);

    /* a real Python without DJANGO_SETTINGS_MODULE nor manage.py: Django's
     * own error, its last line */
    unsetenv("DJANGO_SETTINGS_MODULE");
    t = django_compute("/usr/bin/python3", dir, err, sizeof err);
    cr_assert_null(t);
    cr_assert(strstr(err, "/usr/bin/python3 (django_python) could not list the migrations: "), "%s", err);
    cr_assert_null(strchr(err, '\n'));
}

Test(django, the_project_dir_is_the_cwd_outside_manage_py)
{
    char want[4096], got[4096];
    cr_assert(getcwd(want, sizeof want));
    django_project_dir(got, sizeof got);
    cr_assert_str_eq(got, want);
    struct config cfg;
    config_defaults(&cfg);
    char path[4200];
    django_target_path(&cfg, "/app", path, sizeof path);
    cr_assert_str_eq(path, "/app/.migshim-django.target");
    snprintf(cfg.django_target, sizeof cfg.django_target, "/etc/x.target");
    django_target_path(&cfg, "/app", path, sizeof path);
    cr_assert_str_eq(path, "/etc/x.target");
    char cache[4200], want_prefix[64];
    django_cache_path("/app", cache, sizeof cache);
    snprintf(want_prefix, sizeof want_prefix, "/tmp/migshim-%ld/django-", (long)getuid());
    cr_assert_eq(strncmp(cache, want_prefix, strlen(want_prefix)), 0, "%s", cache);
}

/* --- which interpreter lists the graph --------------------------------------------- */

static void make_exec(const char *path)
{
    write_file(path, "#!/bin/sh\nexit 1\n");
    cr_assert_eq(chmod(path, 0755), 0);
}

static void mkdirs(const char *sub)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    cr_assert_eq(mkdir(p, 0755), 0, "%s", p);
}

/* A base interpreter (no Django), a venv whose bin/python and bin/python3
 * are symlinks to it (as venv, virtualenv, uv and Poetry make them), and a
 * second venv of another interpreter. */
struct pyfix {
    char base[512], exe[PATH_MAX], venv[512], vpy[600], vpy3[600], vcfg[600], other[512];
};

static void pyfix(struct pyfix *x)
{
    char p[600];
    mkdirs("base");
    mkdirs("base/bin");
    snprintf(x->base, sizeof x->base, "%s/base/bin/python3.11", dir);
    make_exec(x->base);
    cr_assert(realpath(x->base, x->exe));
    mkdirs("venv");
    mkdirs("venv/bin");
    snprintf(x->venv, sizeof x->venv, "%s/venv", dir);
    snprintf(x->vcfg, sizeof x->vcfg, "%s/pyvenv.cfg", x->venv);
    snprintf(p, sizeof p, "home = %s/base/bin\n", dir);
    write_file(x->vcfg, p);
    snprintf(x->vpy, sizeof x->vpy, "%s/bin/python", x->venv);
    snprintf(x->vpy3, sizeof x->vpy3, "%s/bin/python3", x->venv);
    cr_assert_eq(symlink("python3", x->vpy), 0); /* a chain, as uv makes it */
    cr_assert_eq(symlink(x->base, x->vpy3), 0);
    /* another venv, of another interpreter */
    mkdirs("other");
    mkdirs("other/bin");
    snprintf(x->other, sizeof x->other, "%s/other", dir);
    snprintf(p, sizeof p, "%s/other/bin/python3", dir);
    make_exec(p);
    snprintf(p, sizeof p, "%s/other/pyvenv.cfg", dir);
    write_file(p, "home = /elsewhere\n");
}

static void choose(const struct django_python_facts *f, char *out, char *why)
{
    django_choose_python(f, out, PATH_MAX, why, 1024);
}

Test(django, a_venv_python_as_invoked_is_chosen_not_the_base_it_links_to)
{
    struct pyfix x;
    pyfix(&x);
    char out[PATH_MAX], why[1024], want[1200];
    snprintf(want, sizeof want, "argv[0] as invoked; a virtualenv: %s", x.vcfg);

    /* an absolute argv[0] */
    struct django_python_facts f = {.argv0 = x.vpy, .exe = x.exe, .path = "/usr/bin"};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.vpy);
    cr_assert_str_eq(why, want);

    /* no slash: searched in PATH, an empty entry and a missing folder skipped */
    char path[1200];
    snprintf(path, sizeof path, "/nonexistent:%s/bin:/usr/bin", x.venv);
    f = (struct django_python_facts){.argv0 = "python", .exe = x.exe, .path = path};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.vpy);
    cr_assert_str_eq(why, want);

    /* relative, with a slash: against the current directory */
    f = (struct django_python_facts){.argv0 = "bin/python3", .exe = x.exe, .cwd = x.venv};
    choose(&f, out, why);
    snprintf(want, sizeof want, "%s/bin/python3", x.venv);
    cr_assert_str_eq(out, want);
}

Test(django, the_base_interpreter_as_invoked_has_no_virtualenv)
{
    struct pyfix x;
    pyfix(&x);
    char out[PATH_MAX], why[1024];
    struct django_python_facts f = {.argv0 = x.base, .exe = x.exe, .virtual_env = x.other};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.base);
    cr_assert_str_eq(why, "argv[0] as invoked; no virtualenv");
}

Test(django, a_rewritten_argv0_falls_back_to_the_path_execve_ran_then_virtual_env)
{
    struct pyfix x;
    pyfix(&x);
    char out[PATH_MAX], why[1024], want[1200], script[700];
    /* setproctitle: "gunicorn: worker [app]" is not a path; execve ran the
     * venv's bin/gunicorn (#!<venv>/bin/python): its python3 beside it */
    snprintf(script, sizeof script, "%s/bin/gunicorn", x.venv);
    make_exec(script);
    struct django_python_facts f = {.argv0 = "gunicorn: worker [app]", .exe = x.exe,
                                    .execfn = script, .virtual_env = x.other};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.vpy3);
    snprintf(want, sizeof want, "the path execve ran (AT_EXECFN); a virtualenv: %s", x.vcfg);
    cr_assert_str_eq(why, want);

    /* execve ran the interpreter itself, by a relative path */
    f = (struct django_python_facts){.argv0 = "gunicorn: worker [app]", .exe = x.exe,
                                     .execfn = "venv/bin/python", .cwd = dir};
    choose(&f, out, why);
    snprintf(want, sizeof want, "%s/venv/bin/python", dir);
    cr_assert_str_eq(out, want);

    /* nothing of that: VIRTUAL_ENV, when it is this interpreter's */
    f = (struct django_python_facts){.argv0 = "gunicorn: worker [app]", .exe = x.exe,
                                     .execfn = "/usr/bin/env", .virtual_env = x.venv};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.vpy3);
    snprintf(want, sizeof want, "VIRTUAL_ENV; a virtualenv: %s", x.vcfg);
    cr_assert_str_eq(why, want);

    /* a VIRTUAL_ENV (or a script's folder) of another interpreter is not this process's */
    char other_script[700];
    snprintf(other_script, sizeof other_script, "%s/bin/gunicorn", x.other);
    f = (struct django_python_facts){.argv0 = "gunicorn: worker [app]", .exe = x.exe,
                                     .virtual_env = x.other, .execfn = other_script};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.exe);
    cr_assert_str_eq(why, "this process's interpreter (argv[0] gunicorn: worker [app] is not it)");
}

Test(django, the_configured_python_wins_and_a_non_python_process_asks_the_environment)
{
    struct pyfix x;
    pyfix(&x);
    char out[PATH_MAX], why[1024];
    struct django_python_facts f = {.configured = "/opt/py/bin/python", .argv0 = x.vpy,
                                    .exe = x.exe};
    choose(&f, out, why);
    cr_assert_str_eq(out, "/opt/py/bin/python");
    cr_assert_str_eq(why, "django_python");

    /* the command line (`migshim heads --django`): an activated venv, else python3 */
    f = (struct django_python_facts){.argv0 = "migshim", .exe = "/usr/bin/migshim",
                                     .virtual_env = x.venv};
    choose(&f, out, why);
    cr_assert_str_eq(out, x.vpy3);
    cr_assert_str_eq(why, "VIRTUAL_ENV; this process is no Python");
    f = (struct django_python_facts){.argv0 = "migshim", .exe = "/usr/bin/migshim"};
    choose(&f, out, why);
    cr_assert_str_eq(out, "python3");
    cr_assert_str_eq(why, "python3 from PATH; this process is no Python");
}
