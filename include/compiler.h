/*
 * compiler — the attributes every module shares.
 *
 * MUSTCHECK: a function that can fail returns bool (or a result enum) and
 * its caller must look at it; the compiler says so when one does not
 * (-Werror makes that a build error).  A caller that has nothing better
 * to do with a failure logs it: a failure is never dropped silently.
 *
 *   bool lock_release(...) MUSTCHECK;
 *   if (!lock_release(...))
 *       log_warn("...; closing the lock connection releases it");
 */
#ifndef MIGSHIM_COMPILER_H
#define MIGSHIM_COMPILER_H

#define MUSTCHECK __attribute__((warn_unused_result))

#endif
