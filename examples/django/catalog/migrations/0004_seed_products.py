from django.db import migrations

from catalog import data


class Migration(migrations.Migration):
    """Data: see catalog/data.py (seed_products)."""

    dependencies = [
        ("catalog", "0003_product_sku"),
    ]

    operations = [
        migrations.RunPython(data.seed_products, data.unseed_products),
    ]
