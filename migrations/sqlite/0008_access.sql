-- Access: bearer tokens, and a Nachrichten-UUID unique across the installation.
-- SQLite dialect; keep in step with migrations/postgres/0008_access.sql.

-- A token is shown once when it is made; only its SHA-256 is kept. The token is 32 random
-- bytes from the operating system, so a plain hash is enough: nobody can guess or
-- brute-force a 256-bit secret from its hash, which is what a slow password hash guards
-- against for low-entropy passwords. Revoked tokens stay (their name stays taken), so the
-- list says who had access and until when.
CREATE TABLE access_tokens (
    name         TEXT PRIMARY KEY NOT NULL,
    -- admin, operator or tenant:<id>.
    role         TEXT NOT NULL,
    -- SHA-256 of the token text, lower-case hex.
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
) STRICT;

-- A Nachrichten-UUID names one message in the whole installation, whichever tenant sent it:
-- the second message with a UUID already recorded is a duplicate even under another tenant.
-- Requests recorded before this migration may hold one UUID under two tenants; the later of
-- them gives its UUID up (it stays in its payload), so the
-- index can be built.
UPDATE requests SET nachrichten_uuid = NULL
WHERE nachrichten_uuid IS NOT NULL
  AND EXISTS (SELECT 1 FROM requests earlier
              WHERE earlier.nachrichten_uuid = requests.nachrichten_uuid AND earlier.id < requests.id);
DROP INDEX requests_tenant_nachrichten_uuid;
CREATE UNIQUE INDEX requests_nachrichten_uuid ON requests (nachrichten_uuid) WHERE nachrichten_uuid IS NOT NULL;
