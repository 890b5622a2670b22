-- The fleet (issue 15): the lowest app version each role may sync with, and how many
-- local changes a device said were waiting to be sent when it last connected.

CREATE TABLE min_app_versions (
    role TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    set_at BIGINT NOT NULL
);

ALTER TABLE devices ADD COLUMN pending_changes BIGINT NULL;
