-- The pipeline on the job queues: the routing decision in columns, the outbox that keeps a
-- state change and the trigger of the next stage in one transaction, and a journal that
-- refuses DELETE as well as UPDATE.
-- PostgreSQL dialect; keep in step with migrations/sqlite/0002_pipeline.sql.

-- What the routing stage decided, for the stages after it (all NULL until routed).
ALTER TABLE requests ADD COLUMN routed_kennung TEXT;
ALTER TABLE requests ADD COLUMN routed_name TEXT;
ALTER TABLE requests ADD COLUMN routed_channel TEXT CHECK (routed_channel IN ('xta', 'post'));
ALTER TABLE requests ADD COLUMN routed_xta_reader TEXT;
ALTER TABLE requests ADD COLUMN routed_xta_service TEXT;
-- The directory generation the decision was taken from ('sample' for the built-in data).
ALTER TABLE requests ADD COLUMN directory_generation TEXT;

-- Triggers for the next stage, written in the transaction of the state change that makes
-- them due. The relay pushes each to the queue named, with the idempotency key
-- "<request_id>:<seq>", then deletes it. seq is the journal event that entered the state.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id BIGINT      NOT NULL REFERENCES requests (id),
    queue      TEXT        NOT NULL,
    seq        INTEGER     NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (request_id, queue, seq)
);

-- The journal is append-only: an event is never deleted either (the function raises for
-- both).
CREATE TRIGGER request_events_no_delete
BEFORE DELETE ON request_events
FOR EACH ROW EXECUTE FUNCTION request_events_append_only();
