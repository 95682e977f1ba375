-- 0001: the audit table first (no unique key: a migration applied twice
-- shows up as two rows), then the app's first table.
CREATE TABLE app.migration_runs (
    version text NOT NULL,
    pid     integer,
    at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.users (
    id   serial PRIMARY KEY,
    name varchar(50) NOT NULL
);
