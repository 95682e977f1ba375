from django.conf import settings
from django.db import models


class Tag(models.Model):
    """Seeded by migration 0002 (RunPython; in the squash too): exactly data.TAGS."""
    name = models.CharField(max_length=50)            # no unique key: a second run would show
    seeded_by_pid = models.IntegerField(null=True)

    def __str__(self):
        return self.name


class Post(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    tags = models.ManyToManyField(Tag, blank=True)
    slug = models.SlugField(default="")              # migration 0003

    def __str__(self):
        return self.title
