-- Accounts, devices and the server's keys. Times are unix milliseconds, ids are uuid text.

CREATE TABLE cities (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE counties (
    id TEXT PRIMARY KEY NOT NULL,
    city_id TEXT NOT NULL REFERENCES cities (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (city_id, name)
);

CREATE TABLE schools (
    id TEXT PRIMARY KEY NOT NULL,
    county_id TEXT NOT NULL REFERENCES counties (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (county_id, name)
);

CREATE TABLE venues (
    id TEXT PRIMARY KEY NOT NULL,
    county_id TEXT NOT NULL REFERENCES counties (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (county_id, name)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('pupil', 'volunteer', 'teacher', 'venue_staff', 'bureau_admin')),
    school_id TEXT NULL REFERENCES schools (id),
    venue_id TEXT NULL REFERENCES venues (id),
    display_name TEXT NULL,
    external_ref TEXT NULL,
    pupil_pass_serial BIGINT NULL,
    created_at BIGINT NOT NULL,
    erased_at BIGINT NULL
);
CREATE INDEX users_school ON users (school_id, role);

-- Pupils erased from a school: the anonymous count that keeps reports right once the
-- pupil's row no longer names the school.
CREATE TABLE school_erased_pupils (
    school_id TEXT PRIMARY KEY NOT NULL REFERENCES schools (id),
    erased_count BIGINT NOT NULL
);

-- Pupil passes that must no longer be accepted (erasure, reissue).
CREATE TABLE pass_revocations (
    pupil_id TEXT NOT NULL REFERENCES users (id),
    serial BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    PRIMARY KEY (pupil_id, serial)
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash BLOB NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT NULL,
    last_sync_at BIGINT NULL,
    app_version TEXT NULL,
    pending_refusals BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE enrollment_codes (
    code_hash BLOB PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT NULL,
    device_id TEXT NULL
);
CREATE INDEX enrollment_codes_user ON enrollment_codes (user_id);

CREATE TABLE refusals (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id),
    doc_id TEXT NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX refusals_device ON refusals (device_id, at);

CREATE TABLE server_keys (
    name TEXT PRIMARY KEY NOT NULL,
    seed BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
