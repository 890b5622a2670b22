-- Documents and their change rows: the source of truth, filled by the sync engine.

CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    snapshot BLOB NULL,
    snapshot_heads BLOB NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE changes (
    doc_id TEXT NOT NULL,
    hash BLOB NOT NULL,
    data BLOB NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, hash)
);

CREATE TABLE sync_states (
    doc_id TEXT NOT NULL,
    peer_storage_id TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (doc_id, peer_storage_id)
);
