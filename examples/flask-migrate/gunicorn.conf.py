# Gunicorn settings for running the example by hand:
#   DATABASE_URL=postgresql+psycopg2:///mydb RUN_DB_MIGRATIONS_ON_STARTUP=true \
#   LD_PRELOAD=$PWD/../../build/libmigshim.so gunicorn app:app
# (Gunicorn reads ./gunicorn.conf.py when no -c is given.)
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "16"))
worker_class = os.environ.get("WORKER_CLASS", "sync")
graceful_timeout = 5
