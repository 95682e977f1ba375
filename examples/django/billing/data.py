"""The data migration's code."""
import os

from djexample.race import window

CURRENCIES = [("EUR", "Euro"), ("USD", "US dollar"), ("JPY", "Yen"), ("CHF", "Swiss franc")]


def seed_currencies(apps, schema_editor):
    Currency = apps.get_model("billing", "Currency")
    db = schema_editor.connection.alias
    for code, name in CURRENCIES:
        Currency.objects.using(db).create(code=code, name=name, seeded_by_pid=os.getpid())
    window(schema_editor.connection, "billing.0002_seed_currencies")


def unseed_currencies(apps, schema_editor):
    apps.get_model("billing", "Currency").objects.using(schema_editor.connection.alias) \
        .filter(code__in=[c for c, _ in CURRENCIES]).delete()
