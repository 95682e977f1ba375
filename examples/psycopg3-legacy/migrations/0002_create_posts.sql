-- 0002: posts belong to users.
CREATE TABLE app.posts (
    id      serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES app.users (id),
    body    text NOT NULL
);
