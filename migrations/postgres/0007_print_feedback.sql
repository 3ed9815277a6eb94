-- The print centre's feedback on the letters of a batch. Postgres dialect; keep in step with the other.

-- Every letter a batch ever had: its number, its request, and the file it was handed off in.
-- Kept when the request leaves the batch (a print-centre error sends it back to awaiting
-- print, and a later night's batch takes it again under a new number), so that the batch's
-- files, its feedback and `amtsbote print-batch show` still find it.
CREATE TABLE print_letters (
    batch_id      TEXT    NOT NULL REFERENCES print_batches (batch_id),
    letter_number INTEGER NOT NULL,
    request_id    BIGINT  NOT NULL REFERENCES requests (id),
    file_no       INTEGER,
    PRIMARY KEY (batch_id, letter_number)
);
CREATE INDEX print_letters_request ON print_letters (request_id);

-- The batches made before this migration: their letters from the requests.
INSERT INTO print_letters (batch_id, letter_number, request_id)
    SELECT print_batch, letter_number, id FROM requests WHERE print_batch IS NOT NULL AND letter_number IS NOT NULL;

-- What the print centre reported on a letter: one row per (letter, status, time), so that a
-- line imported again changes nothing. Append-only: the history of a letter stays.
CREATE TABLE print_feedback (
    batch_id      TEXT        NOT NULL,
    letter_number INTEGER     NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('printed', 'enveloped', 'handed_over', 'error')),
    reported_at   TIMESTAMPTZ NOT NULL,
    reason        TEXT,
    -- Where it came from: the feedback file's name and line.
    file_name     TEXT        NOT NULL,
    line          INTEGER     NOT NULL,
    imported_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (batch_id, letter_number, status, reported_at),
    FOREIGN KEY (batch_id, letter_number) REFERENCES print_letters (batch_id, letter_number)
);

CREATE FUNCTION print_feedback_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'print_feedback is append-only';
END;
$$;

CREATE TRIGGER print_feedback_append_only
BEFORE UPDATE OR DELETE ON print_feedback
FOR EACH ROW EXECUTE FUNCTION print_feedback_append_only();
