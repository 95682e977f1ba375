from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class CatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "catalog"

    def ready(self):
        from djexample import race
        # once per `migrate` (sender: this app only), after the plan is computed
        pre_migrate.connect(race.pre_migrate, sender=self, dispatch_uid="djexample.race")
