"""The data migrations' code (a module of its own, so a squash can reference it)."""
import os

from djexample.race import window

CATEGORIES = ["books", "music", "games", "tools", "garden"]
PRODUCTS = [("Dune", "books", "BK-0001"), ("Kind of Blue", "music", "MU-0001"),
            ("Go board", "games", "GA-0001")]


def seed_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db = schema_editor.connection.alias
    for name in CATEGORIES:
        Category.objects.using(db).create(name=name, seeded_by_pid=os.getpid())
    window(schema_editor.connection, "catalog.0002_seed_categories")


def unseed_categories(apps, schema_editor):
    apps.get_model("catalog", "Category").objects.using(schema_editor.connection.alias) \
        .filter(name__in=CATEGORIES).delete()


def seed_products(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    Product = apps.get_model("catalog", "Product")
    db = schema_editor.connection.alias
    for name, category, sku in PRODUCTS:
        Product.objects.using(db).create(
            name=name, sku=sku, seeded_by_pid=os.getpid(),
            category=Category.objects.using(db).filter(name=category).order_by("id").first())
    window(schema_editor.connection, "catalog.0004_seed_products")


def unseed_products(apps, schema_editor):
    apps.get_model("catalog", "Product").objects.using(schema_editor.connection.alias) \
        .filter(sku__in=[p[2] for p in PRODUCTS]).delete()
