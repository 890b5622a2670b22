-- Which device owns each automerge actor id: learned from the first accepted write under
-- it; a change under another device's actor id is refused (`foreign-actor`).

CREATE TABLE device_actors (
    actor BYTEA PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL,
    first_seen BIGINT NOT NULL
);
CREATE INDEX device_actors_device ON device_actors (device_id);
