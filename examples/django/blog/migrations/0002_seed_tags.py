from django.db import migrations

from blog import data


class Migration(migrations.Migration):
    """Data: see blog/data.py (seed_tags)."""

    dependencies = [
        ("blog", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(data.seed_tags, data.unseed_tags),
    ]
