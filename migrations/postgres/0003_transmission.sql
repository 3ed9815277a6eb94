-- Transmission over XTA. Postgres dialect; keep in step with the other.

-- The state between sending and delivery (DESIGN.md, "Request states"): the XTA server
-- accepted the message; its transport report is awaited.
INSERT INTO request_states (name) VALUES ('transmitted');

-- The XTA MessageID, created once and stored before the first sendMessage: every re-send of
-- the request uses it, so the server never delivers it twice.
ALTER TABLE requests ADD COLUMN xta_message_id TEXT;
CREATE UNIQUE INDEX requests_xta_message_id ON requests (xta_message_id) WHERE xta_message_id IS NOT NULL;
