"""SQLAlchemy 1.4 (psycopg2 dialect) + Alembic 1.8 migrations.

Needs WORKLOAD_ALEMBIC_DIR: an Alembic script directory (alembic.ini,
env.py, versions/) written by the test. Runs upgrade head, downgrade base,
upgrade head through alembic's command API in this process, snapshotting the
schema and the version table after each step, then some ORM work.
"""

import io
import os

import _common
from _common import tv, rows, scrub

_common.announce("sqlalchemy_alembic")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import orm  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

R = _common.Recorder()

script_dir = os.environ["WORKLOAD_ALEMBIC_DIR"]
url = sa.engine.URL.create(
    "postgresql+psycopg2",
    username=os.environ.get("PGUSER", "postgres"),
    database=os.environ["PGDATABASE"],
    query={"host": os.environ["PGHOST"], "port": os.environ["PGPORT"]},
)
engine = sa.create_engine(url, future=True, poolclass=sa.pool.NullPool)


def snapshot():
    insp = sa.inspect(engine)
    out = {"tables": {}}
    for t in sorted(insp.get_table_names()):
        out["tables"][t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"],
                         scrub(c.get("default")))
                        for c in insp.get_columns(t)],
            "pk": insp.get_pk_constraint(t).get("constrained_columns"),
            "fks": sorted((fk["name"], tuple(fk["constrained_columns"]),
                           fk["referred_table"], tuple(fk["referred_columns"]))
                          for fk in insp.get_foreign_keys(t)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(t)),
            "uniques": sorted((u["name"], tuple(u["column_names"]))
                              for u in insp.get_unique_constraints(t)),
            "checks": sorted((c["name"], c["sqltext"])
                             for c in insp.get_check_constraints(t)),
        }
    out["views"] = sorted(insp.get_view_names())
    with engine.connect() as c:
        out["enums"] = rows(c.execute(sa.text(
            "SELECT t.typname, e.enumlabel FROM pg_type t "
            "JOIN pg_enum e ON e.enumtypid = t.oid ORDER BY t.typname, e.enumsortorder")))
        if "alembic_version" in out["tables"]:
            out["alembic_version"] = rows(c.execute(sa.text(
                "SELECT version_num FROM alembic_version ORDER BY 1")))
        for t in ("accounts", "orders"):
            if t in out["tables"]:
                out["data_" + t] = rows(c.execute(sa.text(
                    "SELECT * FROM %s ORDER BY id" % t)))
    return out


def alembic_cfg():
    buf = io.StringIO()
    cfg = Config(os.path.join(script_dir, "alembic.ini"), stdout=buf)
    cfg.set_main_option("script_location", script_dir)
    cfg.attributes["sqlalchemy_url"] = url
    return cfg, buf


steps = [("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head"),
         ("downgrade", "-1"), ("upgrade", "+1")]
R["migrations"] = []
for i, (what, target) in enumerate(steps):
    with R.step("migration %d %s %s" % (i, what, target)):
        cfg, buf = alembic_cfg()
        getattr(command, what)(cfg, target)
        command.current(cfg)
        R["migrations"].append({"step": "%s %s" % (what, target),
                                "current": buf.getvalue().strip().splitlines(),
                                "schema": snapshot()})

with R.step("history"):
    cfg, buf = alembic_cfg()
    command.history(cfg)
    R["history"] = buf.getvalue().strip().splitlines()

with R.step("orm"):
    out = {}
    Base = orm.declarative_base()

    class Account(Base):
        __tablename__ = "accounts"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(120), nullable=False, unique=True)
        display_name = sa.Column(sa.String(80))
        orders = orm.relationship("Order", back_populates="account",
                                  order_by="Order.id")

    class Order(Base):
        __tablename__ = "orders"
        id = sa.Column(sa.Integer, primary_key=True)
        account_id = sa.Column(sa.Integer, sa.ForeignKey("accounts.id"), nullable=False)
        amount = sa.Column(sa.Numeric(10, 2), nullable=False)
        status = sa.Column(sa.Enum("new", "paid", "void", name="order_status"))
        account = orm.relationship("Account", back_populates="orders")

    with orm.Session(engine, future=True) as s:
        a = Account(id=10, email="orm@example.com", display_name="ORM")
        a.orders = [Order(id=100 + k, amount=k * 1.25, status="new") for k in range(3)]
        s.add(a)
        s.commit()
        got = s.execute(sa.select(Account).where(Account.id == 10)).scalar_one()
        out["orders"] = [(o.id, tv(o.amount), o.status) for o in got.orders]
        s.add(Account(id=11, email="orm@example.com"))
        try:
            s.commit()
            out["dup"] = "no error"
        except sa.exc.IntegrityError as e:
            out["dup"] = {"orig_class": type(e.orig).__name__,
                          "pgcode": e.orig.pgcode,
                          "constraint": e.orig.diag.constraint_name,
                          "detail": e.orig.diag.message_detail}
            s.rollback()
        q = (sa.select(Account.email, sa.func.count(Order.id), sa.func.sum(Order.amount))
             .join(Order, isouter=True).group_by(Account.email).order_by(Account.email))
        out["aggregate"] = rows(s.execute(q).all())
        try:
            s.execute(sa.text("SELECT 1/0"))
        except sa.exc.DBAPIError as e:
            out["div0"] = {"class": type(e).__name__, "pgcode": e.orig.pgcode}
            s.rollback()
        # core: bulk insert + streaming
        with engine.begin() as c:
            c.execute(sa.text("CREATE TABLE bulk (id int, v text)"))
            c.execute(sa.text("INSERT INTO bulk VALUES (:id, :v)"),
                      [{"id": k, "v": "v%d" % k} for k in range(500)])
        with engine.connect() as c:
            res = c.execution_options(stream_results=True, max_row_buffer=50).execute(
                sa.text("SELECT id, v FROM bulk ORDER BY id"))
            n = 0
            last = None
            for r in res:
                n += 1
                last = tuple(r)
            out["streamed"] = [n, tv(last)]
    R["orm"] = out

engine.dispose()
_common.emit(R.result)
