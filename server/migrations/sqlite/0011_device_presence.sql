-- (SQLite has one node and does not use it.)
-- Which devices hold a sync connection to which node (several nodes on one database):
-- a live dashboard on any node marks a device connected to another node as connected.
-- Each node refreshes its rows every few seconds; rows of a node that stopped
-- refreshing (it died) are ignored once stale and deleted later.
CREATE TABLE device_presence (
    node TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (node, device_id)
);
CREATE INDEX device_presence_device ON device_presence (device_id);
