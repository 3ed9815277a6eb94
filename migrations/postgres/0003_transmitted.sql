-- The state between sending and delivery (DESIGN.md, "Request states"): the XTA server
-- accepted the message; its transport report is awaited. Postgres dialect; keep in
-- step with the other.
INSERT INTO request_states (name) VALUES ('transmitted');
