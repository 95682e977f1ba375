/*
 * waitsig — a waiting process still answers SIGTERM, SIGINT and SIGQUIT.
 *
 * While the gate waits for a peer's migration it runs statements of at most
 * one wait slice; libpq retries a system call a signal interrupts, so an
 * app's handler alone would not end the wait.  For the length of a wait
 * only, each of the three signals whose disposition is not SIG_IGN gets a
 * handler of the shim's that records it (nothing else: it is
 * async-signal-safe).  The wait loop looks at the record after every slice
 * and gives up; waitsig_end() puts back the app's exact sigaction (handler,
 * flags, mask) — unless the app installed another one meanwhile, which is
 * then kept — and waitsig_redeliver() sends each recorded signal again to
 * the process, so the app's own handler (or the default action) runs as if
 * the shim had not been there, only later: within one slice.
 *
 * Nothing is installed outside a wait: a leader, a process at head, an app
 * that never waits see their dispositions untouched.  Waits in several
 * threads at once share one installation (counted).
 */
#ifndef MIGSHIM_WAITSIG_H
#define MIGSHIM_WAITSIG_H

/* Install the recording handlers (first waiter) and count this wait.
 * (The first call registers fork handlers: a child forked during a wait
 * starts with the app's handlers and no wait of its own.)  Call it with
 * no mutex of the shim held. */
void waitsig_begin(void);

/* The first signal recorded since the handlers were installed, or 0. */
int waitsig_pending(void);

/* End this wait.  The last waiter out restores the app's dispositions and
 * hands the recorded signals to this thread's waitsig_redeliver(). */
void waitsig_end(void);

/* Send the signals this thread's last waitsig_end() handed over to the
 * process (kill(getpid(), sig)), once each; a no-op when there are none.
 * Call it with no lock of the shim held: the app's handler may run in it. */
void waitsig_redeliver(void);

/* The name of a signal this module records ("SIGTERM"). */
const char *waitsig_name(int sig);

#endif
