/*
 * resolve — see include/resolve.h.
 *
 * How a copy is found: dl_iterate_phdr() lists every loaded object, even
 * those dlopen'ed RTLD_LOCAL.  An object that defines both PQconnectStart
 * and PQlibVersion in its dynamic symbol table, and is not the shim, is a
 * libpq copy; its slots are looked up through its GNU (or SysV) hash table.
 * Which copy a caller reaches is decided from the caller's own module: the
 * libpq copy named in its DT_NEEDED list, exactly what the dynamic linker
 * bound its PLT to.  Results per caller module are cached in a small
 * append-only array read without locks.
 */
#include "resolve.h"

#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "atfork.h"
#include "log.h"
#include "shim.h"

#define MAX_COPIES 8
#define MAX_CALLERS 64

struct caller_entry {
    uintptr_t lo, hi;
    struct pq_copy *copy; /* NULL: module links no libpq */
};

static struct pq_copy copies[MAX_COPIES];
static _Atomic int ncopies;
_Atomic(const struct pq_copy *) resolve_sole;
_Atomic(const struct pq_copy *) resolve_first;
static struct caller_entry callers[MAX_CALLERS];
static _Atomic int ncallers;
static _Atomic(struct pq_copy *) ctypes_copy;
static unsigned long long scanned_adds; /* dlpi_adds at the last full scan */
static pthread_mutex_t resolve_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const api_names[] = {
#define PQ_API_NAME(name, needed) #name,
    PQ_API_LIST(PQ_API_NAME)
#undef PQ_API_NAME
};
static const bool api_needed[] = {
#define PQ_API_NEEDED(name, needed) needed,
    PQ_API_LIST(PQ_API_NEEDED)
#undef PQ_API_NEEDED
};

const char *resolve_api_name(enum pq_api_index i) { return api_names[i]; }

/* --- reading one loaded object's dynamic section --------------------------- */

struct elf_obj {
    uintptr_t base, lo, hi;
    const ElfW(Dyn) *dyn;
    const char *strtab;
    const ElfW(Sym) *symtab;
    const uint32_t *gnu_hash, *sysv_hash;
    const char *soname;
};

/* glibc relocates d_ptr in place on most targets but not where the dynamic
 * section is read-only: accept both. */
static uintptr_t dyn_ptr(const struct elf_obj *o, ElfW(Addr) v)
{
    return v < o->base ? o->base + v : v;
}

static bool elf_obj_read(const struct dl_phdr_info *info, struct elf_obj *o)
{
    memset(o, 0, sizeof *o);
    o->base = info->dlpi_addr;
    o->lo = UINTPTR_MAX;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            uintptr_t a = o->base + ph->p_vaddr;
            if (a < o->lo)
                o->lo = a;
            if (a + ph->p_memsz > o->hi)
                o->hi = a + ph->p_memsz;
        } else if (ph->p_type == PT_DYNAMIC) {
            o->dyn = (const ElfW(Dyn) *)(o->base + ph->p_vaddr);
        }
    }
    if (!o->dyn || o->lo >= o->hi)
        return false;
    uintptr_t soname_off = 0;
    bool has_soname = false;
    for (const ElfW(Dyn) *d = o->dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_STRTAB: o->strtab = (const char *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_SYMTAB: o->symtab = (const ElfW(Sym) *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_GNU_HASH: o->gnu_hash = (const uint32_t *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_HASH: o->sysv_hash = (const uint32_t *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_SONAME: soname_off = d->d_un.d_val; has_soname = true; break;
        default: break;
        }
    }
    if (!o->strtab || !o->symtab)
        return false;
    if (has_soname)
        o->soname = o->strtab + soname_off;
    return true;
}

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

static uint32_t sysv_hash(const char *s)
{
    uint32_t h = 0;
    for (; *s; s++) {
        h = (h << 4) + (unsigned char)*s;
        uint32_t g = h & 0xf0000000u;
        if (g)
            h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

static void *sym_value(const struct elf_obj *o, const ElfW(Sym) *s)
{
    if (s->st_shndx == SHN_UNDEF || s->st_value == 0)
        return NULL;
    if (ELF64_ST_TYPE(s->st_info) != STT_FUNC)
        return NULL;
    return (void *)(o->base + s->st_value);
}

/* The object's own definition of `name`, or NULL. */
static void *elf_lookup(const struct elf_obj *o, const char *name)
{
    if (o->gnu_hash) {
        const uint32_t *h = o->gnu_hash;
        uint32_t nbuckets = h[0], symoffset = h[1], bloom_size = h[2];
        if (nbuckets == 0)
            return NULL;
        const uint32_t *buckets =
            (const uint32_t *)((const ElfW(Addr) *)&h[4] + bloom_size);
        const uint32_t *chain = buckets + nbuckets;
        uint32_t hash = gnu_hash(name);
        uint32_t ix = buckets[hash % nbuckets];
        if (ix < symoffset)
            return NULL;
        for (;; ix++) {
            uint32_t ch = chain[ix - symoffset];
            if ((hash | 1) == (ch | 1) &&
                strcmp(name, o->strtab + o->symtab[ix].st_name) == 0)
                return sym_value(o, &o->symtab[ix]);
            if (ch & 1)
                return NULL;
        }
    }
    if (o->sysv_hash) {
        const uint32_t *h = o->sysv_hash;
        uint32_t nbucket = h[0];
        const uint32_t *bucket = &h[2], *chain = &h[2 + nbucket];
        for (uint32_t ix = bucket[sysv_hash(name) % nbucket]; ix; ix = chain[ix])
            if (strcmp(name, o->strtab + o->symtab[ix].st_name) == 0)
                return sym_value(o, &o->symtab[ix]);
    }
    return NULL;
}

/* --- discovering copies ------------------------------------------------------ */

static uintptr_t shim_lo, shim_hi;

static bool range_has(uintptr_t lo, uintptr_t hi, const void *p)
{
    return (uintptr_t)p >= lo && (uintptr_t)p < hi;
}

bool resolve_in_shim(const void *addr) { return range_has(shim_lo, shim_hi, addr); }

static struct pq_copy *copy_by_range(const void *addr)
{
    int n = atomic_load_explicit(&ncopies, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (range_has(copies[i].lo, copies[i].hi, addr))
            return &copies[i];
    return NULL;
}

static struct pq_copy *copy_by_soname(const char *soname)
{
    int n = atomic_load_explicit(&ncopies, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (strcmp(copies[i].soname, soname) == 0)
            return &copies[i];
    return NULL;
}

static void copy_add(const struct elf_obj *o, const char *path)
{
    int n = atomic_load_explicit(&ncopies, memory_order_relaxed);
    if (n == MAX_COPIES || copy_by_range((const void *)o->lo))
        return;
    struct pq_copy *c = &copies[n];
    memset(c, 0, sizeof *c);
    c->lo = o->lo;
    c->hi = o->hi;
    const char *name = o->soname;
    if (!name) { /* no DT_SONAME: fall back to the file's basename */
        name = strrchr(path, '/');
        name = name ? name + 1 : path;
    }
    strncpy(c->soname, name, sizeof c->soname - 1);
    c->complete = true;
    for (size_t i = 0; i < PQ_API_COUNT; i++) {
        c->api.slot[i] = (void (*)(void))elf_lookup(o, api_names[i]);
        if (!c->api.slot[i] && api_needed[i])
            c->complete = false;
    }
    atomic_store_explicit(&ncopies, n + 1, memory_order_release);
    atomic_store_explicit(&resolve_sole, n == 0 ? c : NULL, memory_order_release);
    if (n == 0) { /* the sole copy: published, then the fast path opened (shim.h) */
        atomic_store_explicit(&resolve_first, c, memory_order_release);
        atomic_fetch_and_explicit(&shim_hooks, ~SHIM_HOOKS_NOSOLE, memory_order_release);
    } else { /* two: every call finds its copy on the slow path, for good */
        atomic_fetch_or_explicit(&shim_hooks, SHIM_HOOKS_NOSOLE, memory_order_seq_cst);
    }
    log_debug("libpq copy %s at %s%s", c->soname, path[0] ? path : "(main program)",
              c->complete ? "" : " (lacks functions the gate needs)");
}

static int scan_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    struct elf_obj o;
    if (!elf_obj_read(info, &o))
        return 0;
    if (range_has(o.lo, o.hi, (const void *)&scan_cb)) {
        shim_lo = o.lo;
        shim_hi = o.hi;
        return 0;
    }
    if (elf_lookup(&o, "PQconnectStart") && elf_lookup(&o, "PQlibVersion"))
        copy_add(&o, info->dlpi_name ? info->dlpi_name : "");
    return 0;
}

static int adds_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    *(unsigned long long *)arg = info->dlpi_adds;
    return 1; /* the counter is the same in every entry: stop after one */
}

/* Rescan the loaded objects when something was dlopen'ed since the last
 * scan.  Caller holds resolve_mu. */
static void scan_locked(void)
{
    unsigned long long adds = 0;
    dl_iterate_phdr(adds_cb, &adds);
    if (adds == scanned_adds && scanned_adds != 0)
        return;
    dl_iterate_phdr(scan_cb, NULL);
    scanned_adds = adds;
}

/* --- callers ----------------------------------------------------------------- */

struct find_caller {
    const void *ra;
    uintptr_t lo, hi;
    struct pq_copy *copy;
    bool found;
};

static int caller_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct find_caller *f = arg;
    struct elf_obj o;
    if (!elf_obj_read(info, &o) || !range_has(o.lo, o.hi, f->ra))
        return 0;
    f->found = true;
    f->lo = o.lo;
    f->hi = o.hi;
    for (const ElfW(Dyn) *d = o.dyn; d->d_tag != DT_NULL; d++) {
        if (d->d_tag != DT_NEEDED)
            continue;
        struct pq_copy *c = copy_by_soname(o.strtab + d->d_un.d_val);
        if (c) {
            f->copy = c;
            break;
        }
    }
    return 1;
}

static struct pq_copy *fallback_copy(void)
{
    struct pq_copy *c = atomic_load_explicit(&ctypes_copy, memory_order_acquire);
    if (c)
        return c;
    return atomic_load_explicit(&ncopies, memory_order_acquire) > 0 ? &copies[0] : NULL;
}

const struct pq_copy *resolve_for_caller(const void *ra)
{
    struct pq_copy *c = copy_by_range(ra);
    if (c)
        return c;
    int n = atomic_load_explicit(&ncallers, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (range_has(callers[i].lo, callers[i].hi, ra))
            return callers[i].copy ? callers[i].copy : fallback_copy();

    resolve_fork_init();
    pthread_mutex_lock(&resolve_mu);
    scan_locked();
    c = copy_by_range(ra);
    if (!c) {
        struct find_caller f = {.ra = ra};
        dl_iterate_phdr(caller_cb, &f);
        c = f.copy;
        int m = atomic_load_explicit(&ncallers, memory_order_relaxed);
        /* A module's DT_NEEDED never changes and its libpq was loaded with
         * it, so the answer is final; "links no libpq" (libffi, for ctypes)
         * is cached too and answered by fallback_copy() at each call. */
        if (f.found && m < MAX_CALLERS) {
            callers[m] = (struct caller_entry){f.lo, f.hi, c};
            atomic_store_explicit(&ncallers, m + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&resolve_mu);
    return c ? c : fallback_copy();
}

bool resolve_is_internal(const void *ra) { return copy_by_range(ra) != NULL; }

bool resolve_is_libpq(const void *ra)
{
    if (copy_by_range(ra))
        return true;
    resolve_fork_init();
    pthread_mutex_lock(&resolve_mu);
    scan_locked();
    pthread_mutex_unlock(&resolve_mu);
    return copy_by_range(ra) != NULL;
}


bool resolve_note_dlsym(const void *real)
{
    struct pq_copy *c = copy_by_range(real);
    if (!c) {
        resolve_fork_init();
        pthread_mutex_lock(&resolve_mu);
        scan_locked();
        pthread_mutex_unlock(&resolve_mu);
        c = copy_by_range(real);
    }
    if (!c)
        return false;
    atomic_store_explicit(&ctypes_copy, c, memory_order_release);
    return true;
}

/* --- the next definition of a name (the real dlsym on musl) ---------------- */

struct next_symbol {
    const char *name;
    bool after_shim;  /* the shim was passed in the walk */
    void *after, *any; /* first definition after the shim; anywhere else */
};

static int next_symbol_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct next_symbol *n = arg;
    struct elf_obj o;
    if (!elf_obj_read(info, &o))
        return 0;
    if (range_has(o.lo, o.hi, (const void *)&next_symbol_cb)) {
        n->after_shim = true;
        return 0;
    }
    void *f = elf_lookup(&o, n->name);
    if (!f)
        return 0;
    if (!n->any)
        n->any = f;
    if (n->after_shim) {
        n->after = f;
        return 1;
    }
    return 0;
}

void *resolve_next_symbol(const char *name)
{
    struct next_symbol n = {.name = name};
    dl_iterate_phdr(next_symbol_cb, &n);
    return n.after ? n.after : n.any;
}

/* --- fork ------------------------------------------------------------------ */

static void atfork_prepare(void) { pthread_mutex_lock(&resolve_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&resolve_mu); }
static void atfork_child(void) { pthread_mutex_unlock(&resolve_mu); }

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("resolve", atfork_prepare, atfork_parent, atfork_child);
}

void resolve_fork_init(void) { pthread_once(&fork_once, fork_register); }
