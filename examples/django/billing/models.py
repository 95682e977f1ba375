from django.db import models


class Currency(models.Model):
    """Seeded by migration 0002 (RunPython): exactly the four of data.CURRENCIES."""
    code = models.CharField(max_length=3)            # no unique key: a second run would show
    name = models.CharField(max_length=50)
    seeded_by_pid = models.IntegerField(null=True)

    def __str__(self):
        return self.code


class Invoice(models.Model):
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT)
    currency = models.ForeignKey(Currency, on_delete=models.PROTECT)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    note = models.TextField(default="", blank=True)  # migration 0003
