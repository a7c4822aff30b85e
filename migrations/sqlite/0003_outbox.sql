-- The outbox: one pending CRM update per lead (keyed by normalised email), always its newest
-- snapshot. A row that is being sent carries the version in flight; a newer snapshot that
-- arrives meanwhile replaces `payload`/`version` but not `inflight_version`, so the result of the
-- send in flight can tell that something newer is still to go.
CREATE TABLE outbox (
    email            TEXT    PRIMARY KEY,
    version          INTEGER NOT NULL,
    payload          TEXT    NOT NULL,          -- CrmUpdate as JSON
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,          -- Unix ms
    first_queued_at  INTEGER NOT NULL,          -- Unix ms; the oldest undelivered state's age
    inflight_version INTEGER,                   -- NULL unless a worker is sending it
    claimed_at       INTEGER,                   -- Unix ms
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE inflight_version IS NULL;

-- Updates that will not be delivered without a change somewhere (mapping, CRM schema, data),
-- with the CRM's own message. `leadgate replay --dead-letters` puts them back in the outbox.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    email       TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    crm         TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    first_queued_at INTEGER NOT NULL,
    dead_at     INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_email ON dead_letters (email);

-- What the CRM last received per lead: the version (never send an older one), the stage rank
-- (never lower the stage), and the CRM's ids for the records (Pipedrive person and lead).
CREATE TABLE crm_delivered (
    email        TEXT    PRIMARY KEY,
    version      INTEGER NOT NULL,
    stage_rank   INTEGER,
    crm_ref      TEXT,                          -- JSON object of CRM ids
    delivered_at INTEGER NOT NULL
);
