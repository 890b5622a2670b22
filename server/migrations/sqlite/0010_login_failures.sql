-- Failed web logins per login name, shared by every server node on the database: a
-- name is locked for everyone once it has used its attempts, whichever node a browser
-- reaches. Rows of names not tried for a while are removed.

CREATE TABLE login_failures (
    login TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
CREATE INDEX login_failures_last_at ON login_failures (last_at);
