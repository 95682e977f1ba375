"""Settings of the migshim Django example (Django 3.2, Debian's python3-django).

Everything that differs between machines comes from the environment:

  DATABASE_URL      postgresql://USER[:PASSWORD]@[HOST][:PORT]/DBNAME[?host=/socket/dir&port=N]
                    (also postgres:// and SQLAlchemy's postgresql+psycopg2://, the
                    form the other examples use); without it, libpq's own PGHOST,
                    PGPORT, PGUSER, PGPASSWORD and PGDATABASE
  DJANGO_SECRET_KEY the secret key (a fixed development key otherwise)
  DJANGO_DEBUG      "1": DEBUG = True
"""
import os
import urllib.parse
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "migshim-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "catalog",
    "billing",
    "blog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "djexample.urls"
WSGI_APPLICATION = "djexample.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_env():
    """DATABASES["default"] from $DATABASE_URL, else from libpq's PG* variables."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        # Nothing set (an image build's `migshim heads --django`, `collectstatic`):
        # fine until something connects; Django then asks for the NAME.
        return {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ.get("PGDATABASE", ""),
                "USER": os.environ.get("PGUSER", ""),
                "PASSWORD": os.environ.get("PGPASSWORD", ""),
                "HOST": os.environ.get("PGHOST", ""), "PORT": os.environ.get("PGPORT", "")}
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("postgres", "postgresql", "postgresql+psycopg2"):
        raise ImproperlyConfigured(
            f"DATABASE_URL: unsupported scheme {u.scheme!r} (expected postgresql://)")
    query = dict(urllib.parse.parse_qsl(u.query))
    name = urllib.parse.unquote(u.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL names no database (postgresql://.../DBNAME)")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": urllib.parse.unquote(u.username or "") or query.pop("user", ""),
        "PASSWORD": urllib.parse.unquote(u.password or "") or query.pop("password", ""),
        "HOST": urllib.parse.unquote(u.hostname or "") or query.pop("host", ""),
        "PORT": str(u.port or "") or query.pop("port", ""),
        "OPTIONS": {k: v for k, v in query.items() if k not in ("user", "password", "host", "port")},
    }


DATABASES = {"default": database_from_env()}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_L10N = True
USE_TZ = True
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's own loggers to stderr (a Gunicorn worker's traceback is not lost).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
