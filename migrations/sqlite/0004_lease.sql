-- The delivery lease (see src/store/lease.rs). A SQLite store has one process, which always
-- holds it; a restart starts a new term, so rows the previous process left in flight are claimed
-- again without a separate release step.
CREATE TABLE delivery_lease (
    account    TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    term       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL                 -- Unix ms
);

-- The term an in-flight row was claimed under.
ALTER TABLE outbox ADD COLUMN claim_term INTEGER;
