-- The pipeline on the job queues: the routing decision in columns, the outbox that keeps a
-- state change and the trigger of the next stage in one transaction, and a journal that
-- refuses DELETE as well as UPDATE.
-- SQLite dialect; keep in step with migrations/postgres/0002_pipeline.sql.

-- What the routing stage decided, for the stages after it (all NULL until routed).
ALTER TABLE requests ADD COLUMN routed_kennung TEXT;
ALTER TABLE requests ADD COLUMN routed_name TEXT;
-- 'xta' or 'post'.
ALTER TABLE requests ADD COLUMN routed_channel TEXT CHECK (routed_channel IN ('xta', 'post'));
ALTER TABLE requests ADD COLUMN routed_xta_reader TEXT;
ALTER TABLE requests ADD COLUMN routed_xta_service TEXT;
-- The directory generation the decision was taken from ('sample' for the built-in data).
ALTER TABLE requests ADD COLUMN directory_generation TEXT;

-- Triggers for the next stage, written in the transaction of the state change that makes
-- them due. The relay pushes each to the queue named, with the idempotency key
-- "<request_id>:<seq>", then deletes it. seq is the journal event that entered the state.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    queue      TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    UNIQUE (request_id, queue, seq)
) STRICT;

-- The journal is append-only: an event is never deleted either.
CREATE TRIGGER request_events_no_delete
BEFORE DELETE ON request_events
BEGIN
    SELECT RAISE(ABORT, 'request_events is append-only');
END;
