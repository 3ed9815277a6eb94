-- Print batches: one per date, decided here. Sqlite dialect; keep in step with the other.

-- A night's batch. Created once per date (the primary key): a second run for the same date,
-- a restart or a second process finds this row and the letters it got, and never makes a
-- second batch. Its writer holds a lease while it writes the files (one writer at a time; a
-- process that died lets go when the lease ends).
CREATE TABLE print_batches (
    batch_date   TEXT    PRIMARY KEY NOT NULL,
    batch_id     TEXT    NOT NULL UNIQUE,
    letters      INTEGER NOT NULL,
    writer       TEXT,
    lease_until  TEXT,
    finished_at  TEXT,
    created_at   TEXT NOT NULL
) STRICT;

-- The files of a batch handed off, each recorded in the transaction that moves its letters
-- to printed: a run after a crash writes only the files not recorded here.
CREATE TABLE print_files (
    batch_id   TEXT    NOT NULL REFERENCES print_batches (batch_id),
    file_no    INTEGER NOT NULL,
    file_name  TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    letters    INTEGER NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (batch_id, file_no)
) STRICT;

-- A request's place in its batch, set when the batch is opened.
ALTER TABLE requests ADD COLUMN print_batch TEXT;
ALTER TABLE requests ADD COLUMN letter_number INTEGER;
CREATE UNIQUE INDEX requests_print_letter ON requests (print_batch, letter_number) WHERE print_batch IS NOT NULL;
