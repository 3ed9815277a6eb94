-- Attempts and their schedule in the ledger. SQLite dialect; keep in step with the other.

-- Tries made in the request's current state (transmit: sends that failed transiently;
-- report: times the transport report was asked for), and when the next one is due. A
-- state change starts both afresh. An operator sees them; a crash keeps the schedule.
ALTER TABLE requests ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN next_attempt_at TEXT;

-- A trigger that is not due before this time (a scheduled further attempt): the relay
-- pushes it with that run time, so the wait is kept by the queue backend.
ALTER TABLE outbox ADD COLUMN not_before TEXT;
