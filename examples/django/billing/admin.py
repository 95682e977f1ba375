from django.contrib import admin

from . import models

for model in (getattr(models, n) for n in dir(models)):
    if isinstance(model, type) and issubclass(model, models.models.Model) \
            and model.__module__ == models.__name__:
        admin.site.register(model)
