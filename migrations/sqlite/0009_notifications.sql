-- Notifications: what the requesting authority is told by email, and the emails themselves.
-- SQLite dialect; keep in step with migrations/postgres/0009_notifications.sql.

-- One row per event the requester is told about, written by the triggers below in the same
-- transaction as the journal event (or the received message's state): a notification can be
-- neither lost nor written twice, whichever code path moved the request. Its id is stable:
-- r<request>-<seq>-<event> (the journal event), m-<tenant>-<file> (a received message).
CREATE TABLE notifications (
    id                  TEXT    PRIMARY KEY NOT NULL,
    tenant              TEXT    NOT NULL,
    event               TEXT    NOT NULL CHECK (event IN ('transmitted', 'delivered', 'printed', 'posted',
                                                          'rejected', 'unroutable', 'failed', 'received')),
    request_id          INTEGER REFERENCES requests (id),
    seq                 INTEGER,
    received_message_id TEXT    REFERENCES received_messages (message_id),
    -- When the event happened.
    at                  TEXT    NOT NULL,
    -- The (first) email that carries it, once the notify stage composed one ...
    mail_id             TEXT,
    -- ... or why none is sent (the tenant does not want this event, no address).
    skipped             TEXT,
    composed_at         TEXT,
    CHECK ((request_id IS NULL) <> (received_message_id IS NULL))
) STRICT;

CREATE INDEX notifications_open ON notifications (at) WHERE mail_id IS NULL AND skipped IS NULL;
CREATE INDEX notifications_request ON notifications (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX notifications_mail ON notifications (mail_id) WHERE mail_id IS NOT NULL;

CREATE TRIGGER request_events_notify
AFTER INSERT ON request_events
WHEN NEW.to_state IN ('transmitted', 'delivered', 'printed', 'posted', 'rejected', 'unroutable', 'failed')
 AND (NEW.from_state IS NULL OR NEW.from_state <> NEW.to_state)
BEGIN
    INSERT OR IGNORE INTO notifications (id, tenant, event, request_id, seq, at)
    SELECT 'r' || NEW.request_id || '-' || NEW.seq || '-' || NEW.to_state, r.tenant, NEW.to_state,
           NEW.request_id, NEW.seq, NEW.at
    FROM requests r WHERE r.id = NEW.request_id;
END;

CREATE TRIGGER received_messages_notify
AFTER UPDATE OF state ON received_messages
WHEN OLD.state = 'stored' AND NEW.state IN ('written', 'invalid')
BEGIN
    INSERT OR IGNORE INTO notifications (id, tenant, event, received_message_id, at)
    VALUES ('m-' || NEW.tenant || '-' || NEW.file_name, NEW.tenant, 'received', NEW.message_id, NEW.updated_at);
END;

-- An email: one or more notifications (a digest) to the recipients of one domain. Its id is
-- the Message-ID's left part, fixed when it is composed, so a retry sends the same email.
--   pending → claimed → sending → accepted | deferred (→ claimed again) | failed
--   claimed: a sender took it (a crash gives it back); sending: its content is being handed
--   to the server — a crash there leaves it unconfirmed (maybe accepted; never sent again by
--   itself). Operators: failed | unconfirmed → pending (retry), or → discarded.
CREATE TABLE mails (
    id              TEXT    PRIMARY KEY NOT NULL,
    tenant          TEXT    NOT NULL,
    -- The addresses, comma-separated, all of `domain`.
    recipients      TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    digest          INTEGER NOT NULL CHECK (digest IN (0, 1)),
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'claimed', 'sending', 'accepted', 'deferred',
                                                       'failed', 'discarded', 'unconfirmed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    claimed_by      TEXT,
    claimed_until   TEXT,
    -- The server's last answer that was not an acceptance (code and text), or why it failed.
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    accepted_at     TEXT
) STRICT;

CREATE INDEX mails_due ON mails (next_attempt_at, id) WHERE status IN ('pending', 'deferred');
CREATE INDEX mails_in_hand ON mails (claimed_until) WHERE status IN ('claimed', 'sending');
CREATE INDEX mails_status ON mails (status, updated_at);

-- Which notifications an email carries. One notification goes in several emails when its
-- recipients are of several domains (one email per domain).
CREATE TABLE mail_notifications (
    mail         TEXT NOT NULL REFERENCES mails (id),
    notification TEXT NOT NULL REFERENCES notifications (id),
    PRIMARY KEY (mail, notification)
) STRICT;
CREATE INDEX mail_notifications_notification ON mail_notifications (notification);

-- A receiving domain that answered "try later" (or whose server could not be reached): its
-- emails wait until next_attempt_at, the others go on. Gone once the domain accepts again.
CREATE TABLE mail_domains (
    domain          TEXT    PRIMARY KEY NOT NULL,
    failures        INTEGER NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT
) STRICT;
