"""pg8000's own operations (Debian's 1.10.6, blocking sockets); prints one
JSON document.  usage: pg8000_ops.py unix|tcp [ssl]"""
import io
import json
import os
import sys

import pg8000

transport = sys.argv[1]
kw = dict(user=os.environ["PGUSER"], database=os.environ["PGDATABASE"])
if transport == "unix":
    kw["unix_sock"] = f"{os.environ['PGHOST']}/.s.PGSQL.{os.environ['PGPORT']}"
else:
    kw.update(host="127.0.0.1", port=int(os.environ["PGPORT"]))
if len(sys.argv) > 2 and sys.argv[2] == "ssl":
    kw["ssl"] = True

out = {}
c = pg8000.connect(**kw)
cur = c.cursor()
cur.execute("SELECT %s::int + 1", (41,))
out["param"] = cur.fetchone()[0]
cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
cur.executemany("INSERT INTO t VALUES (%s, %s)", [(1, "a"), (2, "b")])
c.commit()
cur.execute("INSERT INTO t VALUES (3, 'c')")
c.rollback()
try:
    cur.execute("INSERT INTO t VALUES (1, 'dup')")
except pg8000.ProgrammingError as e:
    out["unique"] = e.args[2] if len(e.args) > 2 else str(e)
    c.rollback()
try:
    cur.execute("SELEC 1")
except pg8000.ProgrammingError as e:
    out["syntax"] = e.args[2] if len(e.args) > 2 else str(e)
    c.rollback()
cur.execute("COPY t FROM STDIN WITH (FORMAT csv)", stream=io.BytesIO(b"10,x\n11,y\n"))
c.commit()
buf = io.BytesIO()
cur.execute("COPY (SELECT id, v FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv)", stream=buf)
out["copy_out"] = buf.getvalue().decode()
for k in (2, 3):  # the same statement again: pg8000's cached prepared statement
    cur.execute("SELECT g, g * %s FROM generate_series(1, 3) g", (k,))
    out.setdefault("prepared", []).append([list(r) for r in cur.fetchall()])
cur.execute("SELECT id, v FROM t ORDER BY id")
out["rows"] = [list(r) for r in cur.fetchall()]
cur.execute("SELECT %s::text", ("x" * 300000,))
out["big"] = len(cur.fetchone()[0])
c.commit()
c.close()
print(json.dumps(out, sort_keys=True))
