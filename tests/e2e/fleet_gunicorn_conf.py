# Gunicorn configuration used by tests/e2e/fleet.py (passed with -c, so the
# example's own gunicorn.conf.py is not read).  Everything else comes from
# the command line.  The hooks print machine-readable lines straight to fd 2
# (not through logging: an app may reconfigure logging and silence
# Gunicorn's loggers):
#
#   fleet: forked pid=N         post_fork, in the new worker
#   fleet: worker-ready pid=N   post_worker_init: the app was imported
#   fleet: child-exit pid=N stopping=0|1
#                               child_exit, in the master, when it reaps one;
#                               stopping=1 once the master is shutting down
#                               (halt or SIGTERM: it closed its listeners)
import os

graceful_timeout = 5


def _say(msg):
    os.write(2, ("fleet: %s\n" % msg).encode())


def post_fork(server, worker):
    _say("forked pid=%d" % os.getpid())


def post_worker_init(worker):
    _say("worker-ready pid=%d" % os.getpid())


def child_exit(server, worker):
    stopping = 0 if server.LISTENERS else 1
    _say("child-exit pid=%d stopping=%d" % (worker.pid, stopping))
