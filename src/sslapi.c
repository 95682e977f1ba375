/*
 * sslapi — see include/sslapi.h.
 */
#include "sslapi.h"

#include <stdatomic.h>

#include "resolve.h"

static const char *const names[SSLI_COUNT] = {
#define SSLAPI_NAME(name) #name,
    SSL_WRAPPED_LIST(SSLAPI_NAME) SSL_USED_LIST(SSLAPI_NAME)
#undef SSLAPI_NAME
};

_Atomic(sslapi_fn) sslapi_slots[SSLI_COUNT];

sslapi_fn sslapi_resolve(enum sslapi_index i)
{
    void *p = resolve_next_symbol(names[i]);
    if (!p || resolve_in_shim(p))
        return NULL;
    sslapi_fn f = (sslapi_fn)p;
    atomic_store_explicit(&sslapi_slots[i], f, memory_order_release);
    return f;
}

const char *sslapi_name(enum sslapi_index i) { return names[i]; }

bool sslapi_visible(void)
{
    return sslapi_get(SSLI_SSL_write_ex) && sslapi_get(SSLI_SSL_read_ex);
}
