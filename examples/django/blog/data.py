"""The data migration's code: referenced by 0002_seed_tags and by the squash."""
import os

from djexample.race import window

TAGS = ["release", "howto", "postgres"]


def seed_tags(apps, schema_editor):
    Tag = apps.get_model("blog", "Tag")
    db = schema_editor.connection.alias
    for name in TAGS:
        Tag.objects.using(db).create(name=name, seeded_by_pid=os.getpid())
    window(schema_editor.connection, "blog.0002_seed_tags")


def unseed_tags(apps, schema_editor):
    apps.get_model("blog", "Tag").objects.using(schema_editor.connection.alias) \
        .filter(name__in=TAGS).delete()
