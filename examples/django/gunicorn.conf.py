# Gunicorn settings for running the example by hand (Gunicorn reads ./gunicorn.conf.py
# when no -c is given):
#   python3 manage.py migrate && python3 -m gunicorn djexample.wsgi
#   DJANGO_MIGRATE_ON_STARTUP=true python3 -m gunicorn djexample.wsgi   # workers migrate
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
graceful_timeout = 5
