import os

from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import pre_migrate


def set_search_path(sender, connection, **kwargs):
    """DJANGO_SEARCH_PATH=schema: `SET search_path` on each new connection, the way some
    multi-tenant apps choose their schema (migshim cannot see it: docs/django.md, Limits)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_catalog.set_config('search_path', %s, false)",
                    [os.environ["DJANGO_SEARCH_PATH"]])


class CatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "catalog"

    def ready(self):
        from djexample import race
        # once per `migrate` (sender: this app only), after the plan is computed
        pre_migrate.connect(race.pre_migrate, sender=self, dispatch_uid="djexample.race")
        if os.environ.get("DJANGO_SEARCH_PATH"):
            connection_created.connect(set_search_path, dispatch_uid="djexample.search_path")
