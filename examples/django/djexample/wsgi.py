"""WSGI entry point: `gunicorn djexample.wsgi:application`.

DJANGO_MIGRATE_ON_STARTUP=true: every process that imports this module (each Gunicorn
worker, or the master with --preload) runs `call_command("migrate")` first -- the
"migrate at start-up" pattern, in-process.  Without coordination a fleet of workers races
on the database; with LD_PRELOAD=libmigshim.so one worker migrates and the others wait.
"""
import os
import sys
import traceback

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djexample.settings")

application = get_wsgi_application()     # django.setup()

if os.environ.get("DJANGO_MIGRATE_ON_STARTUP", "").lower() == "true":
    from django.core.management import call_command
    try:
        call_command("migrate", interactive=False, verbosity=int(
            os.environ.get("DJANGO_MIGRATE_VERBOSITY", "1")))
    except Exception as exc:
        # Said here too: Gunicorn's "Exception in worker process" is easy to lose.
        # one line in one write: the workers share stderr
        msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        sys.stderr.write(f"django-example[{os.getpid()}]: migration failed: {msg}\n")
        sys.stderr.flush()
        traceback.print_exc()
        raise
