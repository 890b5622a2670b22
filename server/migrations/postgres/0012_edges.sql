-- Edge boxes at venues (ADR 0150).
-- Upstream: the users whose devices are edge boxes, one venue each. An edge relays the
-- changes of that venue's devices; the server accepts them only under actor ids of
-- devices on the venue's roster.
CREATE TABLE edge_users (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    venue_id TEXT NOT NULL REFERENCES venues (id),
    created_at BIGINT NOT NULL
);
-- On an edge box: its enrollment with the upstream and what it learned (one row per
-- key: device id, token, upstream key, revocation).
CREATE TABLE edge_state (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
