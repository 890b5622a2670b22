-- One row per booking whose records were written: a random token that every write of
-- the booking's records replaces (ADR 0180). A server remembers, per booking, the rows it
-- wrote last with the token it wrote; the next write of that booking writes only the rows
-- that changed when the stored token is still its own, and every row otherwise (another
-- node, a rebuild or a restore wrote in between).
CREATE TABLE records_writes (
    doc_id TEXT PRIMARY KEY NOT NULL,
    token BIGINT NOT NULL
);
