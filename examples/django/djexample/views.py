import os

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse


def ready(request):
    """200 once every migration of this code is recorded, 503 otherwise."""
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return JsonResponse({"ready": False, "error": str(exc).strip(), "pid": os.getpid()},
                            status=503)
    pending = [f"{m.app_label}.{m.name}" for m, _ in plan]
    return JsonResponse({"ready": not pending, "pending": pending, "pid": os.getpid()},
                        status=503 if pending else 200)


def index(request):
    return JsonResponse({"app": "django-example", "pid": os.getpid()})
