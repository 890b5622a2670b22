-- Projections: relational records rebuilt from the merged documents at any time.

CREATE TABLE proj_venues (
    venue_id TEXT PRIMARY KEY NOT NULL,
    doc_id TEXT NOT NULL,
    profile_json TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE proj_slots (
    slot_id TEXT PRIMARY KEY NOT NULL,
    venue_id TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    capacity BIGINT NOT NULL,
    label TEXT NOT NULL
);

CREATE TABLE proj_bookings (
    doc_id TEXT PRIMARY KEY NOT NULL,
    venue_id TEXT NOT NULL,
    slot_id TEXT NOT NULL,
    school_id TEXT NOT NULL,
    party_size BIGINT NOT NULL,
    status TEXT NOT NULL,
    wait_position BIGINT NULL,
    requested_at BIGINT NOT NULL,
    received_seq BIGINT NOT NULL,
    expected BIGINT NOT NULL,
    arrived BIGINT NOT NULL,
    inside_now BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX proj_bookings_slot ON proj_bookings (slot_id, received_seq);
CREATE INDEX proj_bookings_school ON proj_bookings (school_id);
CREATE INDEX proj_bookings_venue ON proj_bookings (venue_id);

CREATE TABLE proj_check_ins (
    doc_id TEXT NOT NULL,
    pupil_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scan_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    counted BIGINT NOT NULL,
    PRIMARY KEY (doc_id, device_id, scan_id)
);

CREATE TABLE proj_check_outs (
    doc_id TEXT NOT NULL,
    pupil_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scan_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, device_id, scan_id)
);

CREATE TABLE proj_anomalies (
    doc_id TEXT NOT NULL,
    pupil_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, pupil_id, kind)
);

CREATE TABLE proj_activities (
    doc_id TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    volunteer_id TEXT NOT NULL,
    school_id TEXT NULL,
    venue_id TEXT NOT NULL,
    activity_kind TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    minutes BIGINT NOT NULL,
    status TEXT NOT NULL,
    confirmed_minutes BIGINT NOT NULL,
    PRIMARY KEY (doc_id, activity_id)
);
