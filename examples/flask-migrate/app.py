"""The flask-alembic example in Flask-Migrate's layout.

migrations/alembic.ini has no script_location (Flask-Migrate points Alembic
at the migrations/ folder itself), migrations/env.py is Flask-Migrate's
template: it migrates on the app's Flask-SQLAlchemy engine, a pooled engine
that stays open afterwards.  At import, with
RUN_DB_MIGRATIONS_ON_STARTUP=true, the app runs `flask_migrate.upgrade()`
inside an app context -- in every process that imports it.

Environment: DATABASE_URL (required), RUN_DB_MIGRATIONS_ON_STARTUP,
GEVENT_PSYCOPG=1 (cooperative psycopg2 for gevent workers), MIGRATION_SLEEP.
Routes: /ready (200 once the database is at this code's heads, else 503).
"""
import os
import sys
import traceback

if os.environ.get("GEVENT_PSYCOPG") == "1":
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()

import sqlalchemy as sa  # noqa: E402
import flask_migrate  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from flask import Flask, jsonify  # noqa: E402
from flask_migrate import Migrate  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = os.path.join(HERE, "migrations")

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}
db = SQLAlchemy(app)
migrate = Migrate(app, db, directory=MIGRATIONS)


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)
    email = db.Column(db.String(100))


class Post(db.Model):
    __tablename__ = "posts"
    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    body = db.Column(db.Text, nullable=False)


def run_migrations() -> None:
    with app.app_context():
        try:
            flask_migrate.upgrade()
        except Exception as exc:
            # one line in one write: the workers share stderr
            msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
            sys.stderr.write(f"flask-migrate[{os.getpid()}]: migration failed: {msg}\n")
            sys.stderr.flush()
            traceback.print_exc()
            raise


if os.environ.get("RUN_DB_MIGRATIONS_ON_STARTUP", "").lower() == "true":
    run_migrations()

with app.app_context():
    HEADS = sorted(ScriptDirectory.from_config(
        migrate.get_config(MIGRATIONS)).get_heads())


@app.get("/ready")
def ready():
    try:
        version = sorted(r[0] for r in db.session.execute(
            sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.DBAPIError as exc:
        db.session.rollback()
        return jsonify(ready=False, error=str(exc.orig).strip(),
                       pid=os.getpid()), 503
    ok = version == HEADS
    return jsonify(ready=ok, version=version, heads=HEADS,
                   pid=os.getpid()), 200 if ok else 503


@app.get("/")
def index():
    return jsonify(app="flask-migrate", pid=os.getpid(),
                   users=db.session.query(User).count())
