/*
 * elflibc — see include/elflibc.h.  Reads ELF headers with pread(), every
 * offset and size checked against the file: a truncated or hostile file is
 * "unknown", never a crash.
 */
#include "elflibc.h"

#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libc_compat.h"

#define MAX_PHDRS 64
#define MAX_DYN 512
#define MAX_SCRIPT_DEPTH 4

const char *elflibc_name(enum elflibc l)
{
    switch (l) {
    case ELFLIBC_GLIBC: return "glibc";
    case ELFLIBC_MUSL: return "musl";
    case ELFLIBC_UNKNOWN: break;
    }
    return "unknown";
}

static bool read_at(int fd, off_t off, void *buf, size_t n)
{
    return off >= 0 && pread(fd, buf, n, off) == (ssize_t)n;
}

/* A NUL-terminated string at `off`, cut at `n` - 1 bytes. */
static bool read_str(int fd, off_t off, char *buf, size_t n)
{
    if (off < 0 || n == 0)
        return false;
    ssize_t got = pread(fd, buf, n - 1, off);
    if (got <= 0)
        return false;
    buf[got] = '\0';
    return memchr(buf, '\0', (size_t)got) != NULL || (size_t)got < n - 1;
}

struct elf_file {
    int fd;
    off_t size;
    Elf64_Ehdr eh;
    Elf64_Phdr ph[MAX_PHDRS];
    size_t nph;
};

/* Open `path` as an ELF64 file of this machine's byte order. */
static bool elf_open(const char *path, struct elf_file *f)
{
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return false;
    struct stat st;
    static const union { uint16_t u; unsigned char c[2]; } order = {.u = 1};
    unsigned char data = order.c[0] ? ELFDATA2LSB : ELFDATA2MSB;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode) || !read_at(f->fd, 0, &f->eh, sizeof f->eh) ||
        memcmp(f->eh.e_ident, ELFMAG, SELFMAG) != 0 || f->eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        f->eh.e_ident[EI_DATA] != data || f->eh.e_phentsize != sizeof(Elf64_Phdr) ||
        f->eh.e_phnum == 0 || f->eh.e_phnum > MAX_PHDRS) {
        close(f->fd);
        return false;
    }
    f->size = st.st_size;
    f->nph = f->eh.e_phnum;
    if (!read_at(f->fd, (off_t)f->eh.e_phoff, f->ph, f->nph * sizeof(Elf64_Phdr))) {
        close(f->fd);
        return false;
    }
    return true;
}

/* The file offset of virtual address `va`, through the PT_LOAD segments. */
static off_t va_to_off(const struct elf_file *f, Elf64_Addr va)
{
    for (size_t i = 0; i < f->nph; i++) {
        const Elf64_Phdr *p = &f->ph[i];
        if (p->p_type == PT_LOAD && va >= p->p_vaddr && va - p->p_vaddr < p->p_filesz)
            return (off_t)(p->p_offset + (va - p->p_vaddr));
    }
    return -1;
}

/* The libc a NEEDED entry or an interpreter's file name stands for. */
static enum elflibc classify_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "ld-musl-", 8) == 0 || strncmp(base, "libc.musl-", 10) == 0 ||
        strcmp(base, "libc.so") == 0)
        return ELFLIBC_MUSL;
    if (strcmp(base, "libc.so.6") == 0 || strncmp(base, "ld-linux", 8) == 0 ||
        strncmp(base, "ld64.so.", 8) == 0)
        return ELFLIBC_GLIBC;
    return ELFLIBC_UNKNOWN;
}

enum elflibc elflibc_of_library(const char *path, char *what, size_t whatsz)
{
    if (whatsz)
        what[0] = '\0';
    struct elf_file f;
    if (!elf_open(path, &f))
        return ELFLIBC_UNKNOWN;
    enum elflibc r = ELFLIBC_UNKNOWN;
    const Elf64_Phdr *dynp = NULL;
    for (size_t i = 0; i < f.nph; i++)
        if (f.ph[i].p_type == PT_DYNAMIC)
            dynp = &f.ph[i];
    Elf64_Dyn dyn[MAX_DYN];
    size_t ndyn = dynp ? dynp->p_filesz / sizeof(Elf64_Dyn) : 0;
    if (ndyn > MAX_DYN)
        ndyn = MAX_DYN;
    if (ndyn && read_at(f.fd, (off_t)dynp->p_offset, dyn, ndyn * sizeof(Elf64_Dyn))) {
        off_t strtab = -1;
        for (size_t i = 0; i < ndyn && dyn[i].d_tag != DT_NULL; i++)
            if (dyn[i].d_tag == DT_STRTAB)
                strtab = va_to_off(&f, dyn[i].d_un.d_ptr);
        for (size_t i = 0; strtab >= 0 && i < ndyn && dyn[i].d_tag != DT_NULL; i++) {
            if (dyn[i].d_tag != DT_NEEDED || dyn[i].d_un.d_val >= (Elf64_Xword)f.size)
                continue;
            char name[256];
            if (!read_str(f.fd, strtab + (off_t)dyn[i].d_un.d_val, name, sizeof name))
                continue;
            enum elflibc c = classify_name(name);
            if (c != ELFLIBC_UNKNOWN) {
                r = c;
                if (whatsz)
                    snprintf(what, whatsz, "%s", name);
                break;
            }
        }
    }
    close(f.fd);
    return r;
}

/* The executable execvp(cmd) would run: `cmd` itself when it has a '/',
 * else the first executable regular file of that name on PATH. */
static bool find_on_path(const char *cmd, char *out, size_t n)
{
    if (strchr(cmd, '/')) {
        snprintf(out, n, "%s", cmd);
        return true;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/bin:/usr/bin"; /* execvp's default */
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int w = snprintf(out, n, "%.*s%s%s", (int)len, p, len ? "/" : "", cmd);
        struct stat st;
        if (w > 0 && (size_t)w < n && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
            access(out, X_OK) == 0)
            return true;
        if (!end)
            return false;
        p = end;
    }
}

/* A #! line's interpreter, with `/usr/bin/env [-S] [-i] [VAR=val...] NAME`
 * followed to NAME on PATH.  False when `path` is no script. */
static bool script_interpreter(const char *path, char *out, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char line[256];
    ssize_t got = read(fd, line, sizeof line - 1);
    close(fd);
    if (got < 3 || line[0] != '#' || line[1] != '!')
        return false;
    line[got] = '\0';
    line[strcspn(line, "\n")] = '\0';
    char *words[8];
    size_t nw = 0;
    for (char *save = NULL, *w = strtok_r(line + 2, " \t", &save); w && nw < 8;
         w = strtok_r(NULL, " \t", &save))
        words[nw++] = w;
    if (nw == 0)
        return false;
    const char *base = strrchr(words[0], '/');
    if (strcmp(base ? base + 1 : words[0], "env") == 0) {
        for (size_t i = 1; i < nw; i++)
            if (words[i][0] != '-' && !strchr(words[i], '='))
                return find_on_path(words[i], out, n);
        return false;
    }
    snprintf(out, n, "%s", words[0]);
    return true;
}

static enum elflibc program_libc(const char *path, char *what, size_t whatsz, int depth)
{
    struct elf_file f;
    if (!elf_open(path, &f)) {
        char interp[PATH_MAX];
        if (depth < MAX_SCRIPT_DEPTH && script_interpreter(path, interp, sizeof interp))
            return program_libc(interp, what, whatsz, depth + 1);
        return ELFLIBC_UNKNOWN;
    }
    enum elflibc r = ELFLIBC_UNKNOWN;
    for (size_t i = 0; i < f.nph; i++) {
        const Elf64_Phdr *p = &f.ph[i];
        if (p->p_type != PT_INTERP || p->p_filesz == 0 || p->p_filesz >= PATH_MAX)
            continue;
        char interp[PATH_MAX], real[PATH_MAX];
        if (!read_str(f.fd, (off_t)p->p_offset, interp, (size_t)p->p_filesz + 1))
            break;
        /* symlinks resolved: an interpreter named for one libc may be the
         * other's loader (a compatibility link) */
        r = classify_name(realpath(interp, real) ? real : interp);
        if (r == ELFLIBC_UNKNOWN)
            r = classify_name(interp);
        if (whatsz)
            snprintf(what, whatsz, "%s", interp);
        break;
    }
    close(f.fd);
    return r;
}

enum elflibc elflibc_of_program(const char *path, char *what, size_t whatsz)
{
    if (whatsz)
        what[0] = '\0';
    return program_libc(path, what, whatsz, 0);
}

bool elflibc_preload_ok(const char *lib, const char *command, char *why, size_t whysz)
{
    char needed[256];
    enum elflibc want = elflibc_of_library(lib, needed, sizeof needed);
    if (want == ELFLIBC_UNKNOWN)
        return true;
    char exe[PATH_MAX], interp[PATH_MAX], who[PATH_MAX + 64];
    enum elflibc have = ELFLIBC_UNKNOWN;
    if (find_on_path(command, exe, sizeof exe))
        have = elflibc_of_program(exe, interp, sizeof interp);
    if (have != ELFLIBC_UNKNOWN) {
        if (strcmp(exe, command) == 0)
            snprintf(who, sizeof who, "%s", command);
        else
            snprintf(who, sizeof who, "%s (%s)", command, exe);
    } else {
        /* a static or unreadable command: this system's libc, as the
         * running wrapper's own loader says, else its build's */
        have = elflibc_of_program("/proc/self/exe", interp, sizeof interp);
        if (have == ELFLIBC_UNKNOWN) {
            have = strcmp(MIGSHIM_LIBC, "musl") == 0 ? ELFLIBC_MUSL : ELFLIBC_GLIBC;
            snprintf(interp, sizeof interp, "the libc migshim was built for");
        }
        snprintf(who, sizeof who, "this system");
    }
    if (have == want)
        return true;
    snprintf(why, whysz,
             "refusing to preload %s: built for %s (NEEDED %s), but %s runs on %s (%s); "
             "use the library built for %s",
             lib, elflibc_name(want), needed, who, elflibc_name(have), interp, elflibc_name(have));
    return false;
}
