-- Messages fetched from the XTA message box for our tenants (the receive stage,
-- src/xta/receive.rs). Postgres dialect; keep in step with the other.

-- One row per MessageID, inserted when getMessage returned the message and before anything is
-- written (insert-if-absent: a message offered again after a crash, or fetched by two
-- processes at once, finds the row that is there). The file is written from this payload;
-- the box is closed only after the row says it was written. Its own table: a received
-- message is not a request of ours.
--   stored  — fetched and kept here; the file is not written yet
--   written — in outbox/<tenant>/<file_name>
--   invalid — in outbox/<tenant>/error/<file_name>, with its reason
--   closed  — the XTA server was told (close): it drops the message from the box
CREATE TABLE received_messages (
    message_id    TEXT        PRIMARY KEY NOT NULL,
    tenant        TEXT        NOT NULL,
    -- The reader identity whose box it came from (the tenant's kennung).
    reader        TEXT        NOT NULL,
    -- Derived from the MessageID alone, so that a re-write finds the same name.
    file_name     TEXT        NOT NULL,
    payload       BYTEA       NOT NULL,
    state         TEXT        NOT NULL CHECK (state IN ('stored', 'written', 'invalid', 'closed')),
    -- Why it is invalid (set when stored: validation does not change on a re-write).
    reason        TEXT,
    -- Who writes the file now, and until when (a process that died lets go by itself).
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    received_at   TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Two MessageIDs never share a file: a collision fails loudly instead of overwriting.
CREATE UNIQUE INDEX received_messages_tenant_file ON received_messages (tenant, file_name);
