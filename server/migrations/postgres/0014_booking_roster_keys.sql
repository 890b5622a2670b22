-- A key of each booking's roster that changes when the pupils on it change, and only
-- then (ADR 0185): every check-in rewrites a booking's row, so the live dashboard keeps a
-- roster in memory until this key changes instead of until the row's write time. NULL
-- in rows written before it; the dashboard keys those by their write time, as before,
-- until the booking's records are written again.
ALTER TABLE proj_bookings ADD COLUMN roster_key BIGINT;
