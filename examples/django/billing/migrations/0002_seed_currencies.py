from django.db import migrations

from billing import data


class Migration(migrations.Migration):
    """Data: see billing/data.py (seed_currencies)."""

    dependencies = [
        ("billing", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(data.seed_currencies, data.unseed_currencies),
    ]
