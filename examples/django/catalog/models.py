from django.db import models


class Category(models.Model):
    """Seeded by migration 0002 (RunPython): exactly the five of data.CATEGORIES."""
    name = models.CharField(max_length=100)          # no unique key: a second run would show
    seeded_by_pid = models.IntegerField(null=True)   # the process that ran the data migration

    def __str__(self):
        return self.name


class Product(models.Model):
    """Seeded by migration 0004 (RunPython): exactly the three of data.PRODUCTS."""
    name = models.CharField(max_length=100)
    category = models.ForeignKey(Category, on_delete=models.PROTECT)
    sku = models.CharField(max_length=32, db_index=True, default="")
    seeded_by_pid = models.IntegerField(null=True)

    def __str__(self):
        return self.name
