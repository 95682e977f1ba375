-- 0003: a data migration.  Nothing in the schema stops it from running
-- twice: two processes that both read version 0002 would both insert the
-- row (and both record a run).
INSERT INTO app.users (name) VALUES ('admin');
