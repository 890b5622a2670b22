-- School logs: in-school science sessions, expert lectures, mobile-museum tour stops and
-- who attended them. Rebuilt from the school-log documents like the other projections.

CREATE TABLE proj_school_logs (
    doc_id TEXT PRIMARY KEY NOT NULL,
    school_id TEXT NOT NULL,
    year BIGINT NOT NULL
);
CREATE INDEX proj_school_logs_school ON proj_school_logs (school_id);

CREATE TABLE proj_school_sessions (
    doc_id TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    school_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    minutes BIGINT NOT NULL,
    topic TEXT NOT NULL,
    PRIMARY KEY (doc_id, entry_id)
);
CREATE INDEX proj_school_sessions_school ON proj_school_sessions (school_id, at);

CREATE TABLE proj_lectures (
    doc_id TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    school_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    minutes BIGINT NOT NULL,
    topic TEXT NOT NULL,
    PRIMARY KEY (doc_id, entry_id)
);
CREATE INDEX proj_lectures_school ON proj_lectures (school_id, at);

CREATE TABLE proj_tour_stops (
    doc_id TEXT NOT NULL,
    stop_id TEXT NOT NULL,
    school_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    days BIGINT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (doc_id, stop_id)
);
CREATE INDEX proj_tour_stops_school ON proj_tour_stops (school_id, at);

CREATE TABLE proj_tour_attendance (
    doc_id TEXT NOT NULL,
    stop_id TEXT NOT NULL,
    pupil_id TEXT NOT NULL,
    PRIMARY KEY (doc_id, stop_id, pupil_id)
);
