/*
 * sysapi: the table of real libc functions.  The constructor has resolved
 * every entry before main (nothing is looked up at a first call: a signal
 * handler's first write never reaches dlsym), each to libc's own function
 * (not to a wrapper, not to the default), an override injects a fault and
 * is put back, and the typed accessors call what they name.  (Linked
 * without the wrappers: RTLD_NEXT from this program is libc.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sysapi.h"

/* Before any accessor is called, the slots are full: the constructor ran. */
Test(sysapi, resolved_by_the_constructor)
{
    cr_assert(sysapi_ready(), "the constructor has not resolved the table");
    for (int i = 0; i < SYSI_COUNT; i++)
        cr_expect_not_null(sysapi_fast((enum sysapi_index)i), "%s empty after the constructor",
                           sysapi_name((enum sysapi_index)i));
    cr_expect_eq((void *)sysapi_unresolved(SYSI_read), (void *)read);
}

Test(sysapi, every_entry_resolves_to_libc)
{
    for (int i = 0; i < SYSI_COUNT; i++) {
        cr_expect(sysapi_is_real((enum sysapi_index)i), "%s stands on its default",
                  sysapi_name((enum sysapi_index)i));
        cr_expect_not_null(sysapi_fast((enum sysapi_index)i), "%s", sysapi_name((enum sysapi_index)i));
    }
    cr_expect_eq((void *)real_write(), (void *)write, "real_write is libc's write");
    cr_expect_eq((void *)real_recvmsg(), (void *)recvmsg);
}

static ssize_t failing_write(int fd, const void *buf, size_t n)
{
    (void)fd, (void)buf, (void)n;
    errno = EIO;
    return -1;
}

Test(sysapi, override_injects_a_fault_and_is_put_back)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert(sysapi_is_real(SYSI_write));
    sysapi_fn old = sysapi_override(SYSI_write, (sysapi_fn)failing_write);
    cr_expect_eq((void *)old, (void *)write);
    errno = 0;
    cr_expect_eq(real_write()(sv[0], "x", 1), -1);
    cr_expect_eq(errno, EIO);
    sysapi_override(SYSI_write, NULL); /* back to what resolution found */
    cr_expect_eq(real_write()(sv[0], "x", 1), 1);
    cr_expect_eq((void *)sysapi_fast(SYSI_write), (void *)old);
    char c;
    cr_expect_eq(real_recv()(sv[1], &c, 1, 0), 1);
    cr_expect_eq(c, 'x');
    close(sv[0]), close(sv[1]);
}

/* The accessors pass arguments and errno through: a closed fd. */
Test(sysapi, errno_of_the_real_call)
{
    errno = 0;
    cr_expect_eq(real_read()(-1, NULL, 0), -1);
    cr_expect_eq(errno, EBADF);
    errno = 0;
    cr_expect_eq(real_dup2()(-1, 5), -1);
    cr_expect_eq(errno, EBADF);
}
