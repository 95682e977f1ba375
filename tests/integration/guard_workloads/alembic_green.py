"""`alembic` with psycopg2 made cooperative (gevent + psycogreen), as in a
Gunicorn gevent worker: every query goes through psycopg2's green path
(PQsendQuery + a wait callback + PQgetResult).

    /usr/bin/python3 alembic_green.py -c alembic.ini upgrade head
"""
import sys

from psycogreen.gevent import patch_psycopg

patch_psycopg()

from alembic.config import main  # noqa: E402

main(argv=sys.argv[1:], prog="alembic")
