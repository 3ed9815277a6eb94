-- The ledger: every request, its payload, and the append-only journal of its state changes.
-- PostgreSQL dialect; keep in step with migrations/sqlite/0001_ledger.sql.

-- The states a request can be in. A table rather than a CHECK list, so that a later
-- migration adds a state with one INSERT.
CREATE TABLE request_states (
    name TEXT PRIMARY KEY
);

INSERT INTO request_states (name) VALUES
    ('received'), ('validated'), ('routed'), ('transmitting'), ('delivered'),
    ('awaiting_print'), ('printed'), ('posted'), ('rejected'), ('unroutable'),
    ('failed'), ('withdrawn');

CREATE TABLE requests (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant           TEXT        NOT NULL,
    -- Idempotency key of the intake ("inbox:<tenant>:<file>", "http:<uuid>").
    source           TEXT        NOT NULL UNIQUE,
    sha256           TEXT        NOT NULL,
    nachrichten_uuid TEXT,
    kind             TEXT        NOT NULL,
    test             BOOLEAN     NOT NULL,
    file_name        TEXT,
    state            TEXT        NOT NULL REFERENCES request_states (name),
    state_detail     TEXT,
    -- seq of the newest journal event; bumped by the same UPDATE that changes the state.
    last_seq         INTEGER     NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- One request per message: the same Nachrichten-UUID twice for one tenant is a duplicate.
CREATE UNIQUE INDEX requests_tenant_nachrichten_uuid
    ON requests (tenant, nachrichten_uuid) WHERE nachrichten_uuid IS NOT NULL;
CREATE INDEX requests_state_id ON requests (state, id);
CREATE INDEX requests_tenant_id ON requests (tenant, id);

-- The message as received. Its own table so that listing requests never reads it.
CREATE TABLE request_payloads (
    request_id BIGINT PRIMARY KEY REFERENCES requests (id),
    bytes      BYTEA  NOT NULL
);

CREATE TABLE request_events (
    request_id BIGINT      NOT NULL REFERENCES requests (id),
    seq        INTEGER     NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    from_state TEXT        REFERENCES request_states (name),
    to_state   TEXT        NOT NULL REFERENCES request_states (name),
    actor      TEXT        NOT NULL,
    detail     TEXT,
    PRIMARY KEY (request_id, seq)
);

-- The journal is append-only: an event, once written, is never changed.
CREATE FUNCTION request_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'request_events is append-only';
END;
$$;

CREATE TRIGGER request_events_append_only
BEFORE UPDATE ON request_events
FOR EACH ROW EXECUTE FUNCTION request_events_append_only();
