-- Which state of a document its records were computed from. `heads` are the document's
-- heads once its latest changes are stored; `projected_heads` those of the state the
-- records were last written from. Where they differ (a crash between storing changes and
-- writing records), the records are recomputed at start.

ALTER TABLE documents ADD COLUMN heads BLOB NULL;
ALTER TABLE documents ADD COLUMN projected_heads BLOB NULL;
