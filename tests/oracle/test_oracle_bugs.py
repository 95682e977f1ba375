"""Shim bugs the guard oracle found, each as a minimal forced race
(tests/integration/test_guard.py's machinery: the test process plays the
peer and holds its transaction open until the child is blocked behind it).

Both are fixed (the guard follows the app's view of the version table and
answers nothing once its migration is over, and no read of the app's tables
in the stand-in); these are their regression tests.  A new bug goes here as
xfail(strict=True) until it is fixed.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import test_guard as G  # noqa: E402


@pytest.fixture
def guard(pg, make_db, tmp_path):
    g = G.Guard(pg, make_db, tmp_path)
    yield g
    g.close()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_a_later_write_in_the_migrations_own_transaction_is_never_answered(guard, driver):
    """Alembic's cookbook recipe for sharing a connection, as printed for
    SQLAlchemy 1.4:

        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.execute(text("INSERT INTO audit ..."))   # the app's own

    puts the app's later write into the migration's transaction (Alembic
    sees an external transaction and does not commit).  The child loses
    the full-upgrade race on CREATE TABLE alembic_version; the guard rolls
    the transaction back and stands in for the rest of it -- and answers
    the app's own `INSERT INTO audit VALUES ('after')` with "INSERT 0 1"
    (a plain INSERT ... VALUES) and its COMMIT with "COMMIT".  The app is
    told its row is committed; it is not.  Without the shim the app fails
    (23505) and knows.

    Found by the oracle (tests/oracle: runner.py --recipe begin, replay.py
    --same-txn): "exited 0 but its later write is not in the database".

    Expected: either the app sees an error, or its row is there."""
    steps = ([["begin"]]
             + G.sql(G.HAS_VT, G.HAS_VT, G.CREATE_VT, *G.REV1, *G.REV2, *G.REV3,
                     "INSERT INTO audit VALUES ('after')")
             + [["commit"], ["status"]])
    r = guard.race(argv=G.client_argv(driver, steps), heads=G.R3,
                   setup=["CREATE TABLE audit (what text)"],
                   peer=[G.CREATE_VT, *G.REV1, *G.REV2, *G.REV3],
                   blocked_on="CREATE TABLE alembic_version")
    G.assert_completed(r)
    saw_error = any(s.get("ok") is False for s in r.steps())
    assert saw_error or r.after["tables"]["audit"]["rows"] == [["after"]], r.describe()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_a_read_in_the_stand_in_sees_what_the_app_wrote(guard, driver):
    """A revision checks what an earlier one left before building on it
    (tests/oracle family "validate": val1 seeds flags with 'beta', val2
    raises RuntimeError unless it finds it, val3 deletes it).  The child
    loses the race on CREATE TABLE alembic_version; the guard answers its
    CREATE TABLE flags and INSERT INTO flags VALUES ('beta'), then runs its
    SELECT for real in the read-only stand-in -- which shows the peer's
    *final* state (val3 already deleted 'beta'): count 0, right after the
    app was told its INSERT succeeded.  The migration's own check then
    raises: the app fails with an error it can never get without the shim
    (there it gets the race's 23505).  No data is harmed (nothing of the
    child's is written), but the failure is shim-made, and a migration
    that branches on such a read runs code it never would.

    Found by the oracle: "failed with an error the app does not make in a
    race: RuntimeError val2: expected the beta flag, found 0".

    Expected: the read either sees what the app's transaction wrote, or
    the app gets an error (the original one) instead of a result."""
    flags = "CREATE TABLE flags (name text PRIMARY KEY)"
    beta = "INSERT INTO flags VALUES ('beta')"
    check = "SELECT count(*) FROM flags WHERE name = 'beta'"
    steps = ([["begin"]] + G.sql(G.HAS_VT, G.HAS_VT, G.CREATE_VT, flags, beta, check)
             + [["rollback"], ["status"]])
    r = guard.race(argv=G.client_argv(driver, steps), heads=G.R1,
                   peer=[G.CREATE_VT, flags, beta, "DELETE FROM flags WHERE name = 'beta'",
                         G.insert_vt(G.R1)],
                   blocked_on="CREATE TABLE alembic_version")
    G.assert_completed(r)
    q = [s for s in G.sql_steps(r) if s["sql"].startswith("SELECT count")][0]
    assert q["ok"] is False or q["rows"] == [[1]], r.describe()
