/*
 * test_elflibc — src/elflibc.c: which C library an ELF file was built for,
 * and the wrapper's preload decision.  No server.  Uses this test program
 * (a glibc program) and synthetic ELF files written here: a musl program
 * (PT_INTERP /lib/ld-musl-x86_64.so.1) and a musl library (DT_NEEDED
 * libc.musl-x86_64.so.1), then every truncation of them and hostile
 * offsets, which must read as "unknown", never crash.
 */
#include <criterion/criterion.h>
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elflibc.h"

static char dir[] = "/tmp/test_elflibc.XXXXXX";

static void setup(void) { cr_assert_not_null(mkdtemp(dir)); }
static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* A minimal ELF64 of this machine: one PT_LOAD mapping the whole file at
 * vaddr 0x1000, an optional PT_INTERP, a PT_DYNAMIC with DT_STRTAB and one
 * DT_NEEDED.  Returns its size. */
static size_t make_elf(unsigned char *buf, const char *interp, const char *needed,
                       Elf64_Xword needed_off_bias)
{
    memset(buf, 0, 4096);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)buf;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = interp ? ET_EXEC : ET_DYN;
    eh->e_machine = EM_X86_64;
    eh->e_phoff = sizeof *eh;
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 3;
    Elf64_Phdr *ph = (Elf64_Phdr *)(buf + eh->e_phoff);
    size_t off = eh->e_phoff + 3 * sizeof(Elf64_Phdr);
    /* strings */
    size_t str = off;
    buf[off++] = '\0';
    size_t interp_off = off;
    if (interp) {
        strcpy((char *)buf + off, interp);
        off += strlen(interp) + 1;
    }
    size_t needed_off = off;
    strcpy((char *)buf + off, needed);
    off += strlen(needed) + 1;
    off = (off + 7) & ~(size_t)7;
    Elf64_Dyn *dyn = (Elf64_Dyn *)(buf + off);
    dyn[0].d_tag = DT_STRTAB;
    dyn[0].d_un.d_ptr = 0x1000 + str;
    dyn[1].d_tag = DT_NEEDED;
    dyn[1].d_un.d_val = needed_off - str + needed_off_bias;
    dyn[2].d_tag = DT_NULL;
    size_t dyn_off = off;
    off += 3 * sizeof(Elf64_Dyn);
    ph[0] = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0, .p_vaddr = 0x1000, .p_filesz = off, .p_memsz = off};
    ph[1] = (Elf64_Phdr){.p_type = PT_DYNAMIC, .p_offset = dyn_off, .p_vaddr = 0x1000 + dyn_off,
                         .p_filesz = 3 * sizeof(Elf64_Dyn), .p_memsz = 3 * sizeof(Elf64_Dyn)};
    if (interp)
        ph[2] = (Elf64_Phdr){.p_type = PT_INTERP, .p_offset = interp_off, .p_vaddr = 0x1000 + interp_off,
                             .p_filesz = strlen(interp) + 1, .p_memsz = strlen(interp) + 1};
    else
        ph[2] = (Elf64_Phdr){.p_type = PT_NULL};
    return off;
}

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

TestSuite(elflibc, .init = setup, .fini = teardown);

Test(elflibc, this_glibc_program)
{
    char what[256];
    cr_assert_eq(elflibc_of_program("/proc/self/exe", what, sizeof what), ELFLIBC_GLIBC);
    cr_assert(strstr(what, "ld-linux") != NULL, "%s", what);
    cr_assert_eq(elflibc_of_library("/proc/self/exe", what, sizeof what), ELFLIBC_GLIBC);
    cr_assert_str_eq(what, "libc.so.6");
}

Test(elflibc, synthetic_musl_files)
{
    unsigned char buf[4096];
    char prog[256], lib[256], what[256];
    path_in(prog, sizeof prog, "prog");
    path_in(lib, sizeof lib, "lib.so");
    write_file(prog, buf, make_elf(buf, "/lib/ld-musl-x86_64.so.1", "libc.so", 0), 0755);
    write_file(lib, buf, make_elf(buf, NULL, "libc.musl-x86_64.so.1", 0), 0644);
    cr_assert_eq(elflibc_of_program(prog, what, sizeof what), ELFLIBC_MUSL);
    cr_assert_str_eq(what, "/lib/ld-musl-x86_64.so.1");
    cr_assert_eq(elflibc_of_library(prog, what, sizeof what), ELFLIBC_MUSL);
    cr_assert_str_eq(what, "libc.so");
    cr_assert_eq(elflibc_of_library(lib, what, sizeof what), ELFLIBC_MUSL);
    cr_assert_str_eq(what, "libc.musl-x86_64.so.1");
    /* a library has no interpreter: the program reading says unknown */
    cr_assert_eq(elflibc_of_program(lib, what, sizeof what), ELFLIBC_UNKNOWN);
    cr_assert_str_eq(what, "");
}

Test(elflibc, every_truncation_is_unknown_or_right)
{
    unsigned char buf[4096];
    char path[256], what[256];
    path_in(path, sizeof path, "cut");
    size_t n = make_elf(buf, "/lib/ld-musl-x86_64.so.1", "libc.musl-x86_64.so.1", 0);
    for (size_t len = 0; len <= n; len++) {
        write_file(path, buf, len, 0755);
        enum elflibc p = elflibc_of_program(path, what, sizeof what);
        enum elflibc l = elflibc_of_library(path, what, sizeof what);
        cr_assert(p == ELFLIBC_UNKNOWN || p == ELFLIBC_MUSL, "len %zu", len);
        cr_assert(l == ELFLIBC_UNKNOWN || l == ELFLIBC_MUSL, "len %zu", len);
    }
    cr_assert_eq(elflibc_of_library(path, what, sizeof what), ELFLIBC_MUSL);
}

Test(elflibc, hostile_offsets_are_unknown)
{
    unsigned char buf[4096];
    char path[256], what[256];
    path_in(path, sizeof path, "hostile");
    size_t n = make_elf(buf, NULL, "libc.so.6", 1u << 30); /* DT_NEEDED far past the file */
    write_file(path, buf, n, 0644);
    cr_assert_eq(elflibc_of_library(path, what, sizeof what), ELFLIBC_UNKNOWN);
    n = make_elf(buf, NULL, "libc.so.6", 0);
    ((Elf64_Ehdr *)buf)->e_phoff = 1u << 30; /* program headers past the file */
    write_file(path, buf, n, 0644);
    cr_assert_eq(elflibc_of_library(path, what, sizeof what), ELFLIBC_UNKNOWN);
    n = make_elf(buf, NULL, "libc.so.6", 0);
    ((Elf64_Ehdr *)buf)->e_ident[EI_CLASS] = ELFCLASS32; /* not ELF64 */
    write_file(path, buf, n, 0644);
    cr_assert_eq(elflibc_of_library(path, what, sizeof what), ELFLIBC_UNKNOWN);
    n = make_elf(buf, NULL, "libc.so.6", 0);
    write_file(path, buf, n, 0644);
    cr_assert_eq(elflibc_of_library(path, what, sizeof what), ELFLIBC_GLIBC);
    cr_assert_eq(elflibc_of_library("/nonexistent/lib.so", what, sizeof what), ELFLIBC_UNKNOWN);
    cr_assert_eq(elflibc_of_library(dir, what, sizeof what), ELFLIBC_UNKNOWN); /* a directory */
}

Test(elflibc, scripts)
{
    unsigned char buf[4096];
    char musl[256], s1[256], s2[256], loop[256], text[600], what[256];
    path_in(musl, sizeof musl, "muslprog");
    write_file(musl, buf, make_elf(buf, "/lib/ld-musl-x86_64.so.1", "libc.so", 0), 0755);
    path_in(s1, sizeof s1, "direct");
    snprintf(text, sizeof text, "#!%s -x\necho\n", musl);
    write_file(s1, text, strlen(text), 0755);
    cr_assert_eq(elflibc_of_program(s1, what, sizeof what), ELFLIBC_MUSL);
    path_in(s2, sizeof s2, "via-env");
    snprintf(text, sizeof text, "#!/usr/bin/env -S VAR=1 muslprog --flag\n");
    write_file(s2, text, strlen(text), 0755);
    char path[600];
    snprintf(path, sizeof path, "PATH=%s:/usr/bin:/bin", dir);
    putenv(path);
    cr_assert_eq(elflibc_of_program(s2, what, sizeof what), ELFLIBC_MUSL);
    /* a script that names itself: bounded, unknown */
    path_in(loop, sizeof loop, "loop");
    snprintf(text, sizeof text, "#!%s\n", loop);
    write_file(loop, text, strlen(text), 0755);
    cr_assert_eq(elflibc_of_program(loop, what, sizeof what), ELFLIBC_UNKNOWN);
    /* /bin/sh is this system's glibc shell */
    cr_assert_eq(elflibc_of_program("/bin/sh", what, sizeof what), ELFLIBC_GLIBC);
}

Test(elflibc, preload_decision)
{
    unsigned char buf[4096];
    char musl_prog[256], musl_lib[256], junk[256], why[1024];
    path_in(musl_prog, sizeof musl_prog, "muslprog");
    path_in(musl_lib, sizeof musl_lib, "libmusl.so");
    path_in(junk, sizeof junk, "junk.so");
    write_file(musl_prog, buf, make_elf(buf, "/lib/ld-musl-x86_64.so.1", "libc.so", 0), 0755);
    write_file(musl_lib, buf, make_elf(buf, NULL, "libc.so", 0), 0644);
    write_file(junk, "not an ELF file", 15, 0644);
    /* matching */
    cr_assert(elflibc_preload_ok(musl_lib, musl_prog, why, sizeof why));
    cr_assert(elflibc_preload_ok("/proc/self/exe", "/bin/sh", why, sizeof why));
    /* unknown library: never refused */
    cr_assert(elflibc_preload_ok(junk, musl_prog, why, sizeof why));
    /* mismatches, with the one line */
    cr_assert_not(elflibc_preload_ok(musl_lib, "/bin/sh", why, sizeof why));
    cr_assert(strstr(why, "refusing to preload ") == why, "%s", why);
    cr_assert(strstr(why, ": built for musl (NEEDED libc.so), but /bin/sh runs on glibc (") != NULL, "%s", why);
    cr_assert(strstr(why, "); use the library built for glibc") != NULL, "%s", why);
    cr_assert(strchr(why, '\n') == NULL);
    cr_assert_not(elflibc_preload_ok("/proc/self/exe", musl_prog, why, sizeof why));
    cr_assert(strstr(why, "built for glibc (NEEDED libc.so.6), but ") != NULL, "%s", why);
    cr_assert(strstr(why, " runs on musl (/lib/ld-musl-x86_64.so.1)") != NULL, "%s", why);
    /* found on PATH: the line names both */
    char path[600];
    snprintf(path, sizeof path, "PATH=%s:/usr/bin:/bin", dir);
    putenv(path);
    cr_assert_not(elflibc_preload_ok("/proc/self/exe", "muslprog", why, sizeof why));
    char want[600];
    snprintf(want, sizeof want, "but muslprog (%s) runs on musl", musl_prog);
    cr_assert(strstr(why, want) != NULL, "%s", why);
    /* a command that says nothing: this system's libc (this glibc test) */
    cr_assert_not(elflibc_preload_ok(musl_lib, junk, why, sizeof why));
    cr_assert(strstr(why, "but this system runs on glibc (") != NULL, "%s", why);
    cr_assert(elflibc_preload_ok("/proc/self/exe", "/nonexistent/command", why, sizeof why));
}
