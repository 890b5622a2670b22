-- Documents and their change rows: the source of truth, filled by the sync engine.

CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    snapshot BYTEA NULL,
    snapshot_heads BYTEA NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE changes (
    doc_id TEXT NOT NULL,
    hash BYTEA NOT NULL,
    data BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, hash)
);

CREATE TABLE sync_states (
    doc_id TEXT NOT NULL,
    peer_storage_id TEXT NOT NULL,
    state BYTEA NOT NULL,
    PRIMARY KEY (doc_id, peer_storage_id)
);
