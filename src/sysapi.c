/*
 * sysapi — see include/sysapi.h.
 *
 * The defaults are thin syscall(2) calls with the real functions' exact
 * types (so an entry's type never depends on which pointer it holds).
 * Resolution is one pass over the list, in the library's constructor: any
 * call before it or during it (another library's constructor, another
 * thread, a signal handler, a wrapper reached from inside dlsym) gets the
 * default, which does the same system call: the slots are initialised to
 * the defaults, and the constructor swaps each for what it resolved.
 */
#include "sysapi.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/syscall.h>

/* --- the defaults: the system calls themselves ----------------------------- */

static int sys_connect(int fd, const struct sockaddr *a, socklen_t n)
{
    return (int)syscall(SYS_connect, fd, a, n);
}
static int sys_close(int fd) { return (int)syscall(SYS_close, fd); }
static int sys_dup(int fd) { return (int)syscall(SYS_dup, fd); }
static int sys_dup3(int fd, int fd2, int flags) { return (int)syscall(SYS_dup3, fd, fd2, flags); }
static int sys_dup2(int fd, int fd2)
{
#ifdef SYS_dup2
    return (int)syscall(SYS_dup2, fd, fd2);
#else
    if (fd == fd2) /* dup2's rule: the same fd, if it is open */
        return syscall(SYS_fcntl, fd, F_GETFD) < 0 ? -1 : fd2;
    return (int)syscall(SYS_dup3, fd, fd2, 0);
#endif
}
static ssize_t sys_read(int fd, void *b, size_t n) { return syscall(SYS_read, fd, b, n); }
static ssize_t sys_write(int fd, const void *b, size_t n) { return syscall(SYS_write, fd, b, n); }
static ssize_t sys_readv(int fd, const struct iovec *v, int n) { return syscall(SYS_readv, fd, v, n); }
static ssize_t sys_writev(int fd, const struct iovec *v, int n)
{
    return syscall(SYS_writev, fd, v, n);
}
static ssize_t sys_send(int fd, const void *b, size_t n, int fl)
{
    return syscall(SYS_sendto, fd, b, n, fl, NULL, 0);
}
static ssize_t sys_sendto(int fd, const void *b, size_t n, int fl, const struct sockaddr *a,
                          socklen_t al)
{
    return syscall(SYS_sendto, fd, b, n, fl, a, al);
}
static ssize_t sys_sendmsg(int fd, const struct msghdr *m, int fl)
{
    return syscall(SYS_sendmsg, fd, m, fl);
}
static ssize_t sys_recv(int fd, void *b, size_t n, int fl)
{
    return syscall(SYS_recvfrom, fd, b, n, fl, NULL, NULL);
}
static ssize_t sys_recvfrom(int fd, void *restrict b, size_t n, int fl,
                            struct sockaddr *restrict a, socklen_t *restrict al)
{
    return syscall(SYS_recvfrom, fd, b, n, fl, a, al);
}
static ssize_t sys_recvmsg(int fd, struct msghdr *m, int fl) { return syscall(SYS_recvmsg, fd, m, fl); }

/* Each default has its entry's exact type: a mismatch is a compile error. */
#define SYSAPI_DEFAULT_CHECK(name)                                              \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&sys_##name), __typeof__(name) *), \
                   "sys_" #name " has the type of " #name);
LIBC_WRAPPED_LIST(SYSAPI_DEFAULT_CHECK)
#undef SYSAPI_DEFAULT_CHECK

/* --- the table ---------------------------------------------------------------- */

static const struct {
    const char *name;
    sysapi_fn dflt;
} entries[SYSI_COUNT] = {
#define SYSAPI_ENTRY(name) [SYSI_##name] = {#name, (sysapi_fn)sys_##name},
    LIBC_WRAPPED_LIST(SYSAPI_ENTRY)
#undef SYSAPI_ENTRY
};

/* (a static initialiser: the defaults are in place before any code runs) */
_Atomic(sysapi_fn) sysapi_slots[SYSI_COUNT] = {
#define SYSAPI_SLOT(name) [SYSI_##name] = (sysapi_fn)sys_##name,
    LIBC_WRAPPED_LIST(SYSAPI_SLOT)
#undef SYSAPI_SLOT
};
static sysapi_fn resolved[SYSI_COUNT]; /* what resolution found (or the default) */
static bool is_real[SYSI_COUNT];

/* Set (release) once the constructor has filled resolved[] and is_real[]. */
static _Atomic bool ready;

const char *sysapi_name(enum sysapi_index i) { return entries[i].name; }

/* The address range of the loaded object holding `arg`->lo (the shim):
 * its PT_LOAD segments.  (dladdr would do, at ~100 000 instructions a
 * call: it looks for the nearest symbol.) */
struct range {
    uintptr_t lo, hi;
};

static int range_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct range *r = arg, o = {UINTPTR_MAX, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (a < o.lo)
            o.lo = a;
        if (a + ph->p_memsz > o.hi)
            o.hi = a + ph->p_memsz;
    }
    if (r->lo < o.lo || r->lo >= o.hi)
        return 0;
    *r = o;
    return 1;
}

/* Resolve every entry: the library's first constructor (priority 101 runs
 * before the unprioritised ones; libc is loaded and initialised by then,
 * and dlsym(RTLD_NEXT) from a constructor is fine with glibc and musl). */
__attribute__((constructor(101))) static void sysapi_init(void)
{
    int saved = errno;
    struct range self = {(uintptr_t)&sysapi_init, 0};
    if (!dl_iterate_phdr(range_cb, &self))
        self.lo = self.hi = 0; /* (not found: nothing is "in the shim") */
    for (int i = 0; i < SYSI_COUNT; i++) {
        /* (the shim's own dlsym: RTLD_NEXT answers relative to the shim) */
        void *p = dlsym(RTLD_NEXT, entries[i].name);
        /* the self-check: a slot pointing into the shim would loop */
        bool real = p && !((uintptr_t)p >= self.lo && (uintptr_t)p < self.hi);
        is_real[i] = real;
        resolved[i] = real ? (sysapi_fn)p : entries[i].dflt;
    }
    atomic_store_explicit(&ready, true, memory_order_release);
    for (int i = 0; i < SYSI_COUNT; i++) {
        sysapi_fn dflt = entries[i].dflt;
        /* an override made meanwhile stands */
        atomic_compare_exchange_strong(&sysapi_slots[i], &dflt, resolved[i]);
    }
    errno = saved;
}

bool sysapi_ready(void) { return atomic_load_explicit(&ready, memory_order_acquire); }

sysapi_fn sysapi_unresolved(enum sysapi_index i)
{
    return sysapi_ready() ? resolved[i] : entries[i].dflt;
}

sysapi_fn sysapi_override(enum sysapi_index i, sysapi_fn fn)
{
    if (!fn)
        fn = sysapi_unresolved(i);
    return atomic_exchange(&sysapi_slots[i], fn);
}

bool sysapi_is_real(enum sysapi_index i) { return sysapi_ready() && is_real[i]; }
