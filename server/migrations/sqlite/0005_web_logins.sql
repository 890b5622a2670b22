-- Web logins for people who use the browser pages (venue staff, bureau administrators,
-- teachers): a login name and an Argon2id password hash per user, and sessions whose
-- cookie token is stored only as its SHA-256.

CREATE TABLE web_logins (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    login TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE web_sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
