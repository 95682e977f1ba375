from django.db import migrations

from catalog import data


class Migration(migrations.Migration):
    """Data: see catalog/data.py (seed_categories)."""

    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(data.seed_categories, data.unseed_categories),
    ]
