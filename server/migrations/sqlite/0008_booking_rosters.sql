-- The pupils expected on each booking, projected from the booking document with its other
-- records, so the live dashboard reads a roster without loading the document. Only the
-- pseudonymous pupil id and when it was added: names stay in the accounts tables.

CREATE TABLE proj_rosters (
    doc_id TEXT NOT NULL,
    pupil_id TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, pupil_id)
);

-- Bookings projected before this table existed have no roster rows yet: mark their
-- records stale, so the server recomputes them at start (see `reproject_stale`).
UPDATE documents SET projected_heads = NULL
    WHERE doc_id IN (SELECT doc_id FROM proj_bookings);
