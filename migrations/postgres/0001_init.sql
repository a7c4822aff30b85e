-- leadgate's schema on PostgreSQL: the same tables as the SQLite store (migrations/sqlite), plus
-- what several replicas share: the delivery lease (its term is a fencing token) and the CRM
-- quota's token bucket. Times are Unix milliseconds like in SQLite, except where the database's
-- own clock decides (lease expiry, bucket refill): one clock for every replica.

-- The raw inbox: every accepted delivery, exactly as it arrived, deduplicated per source.
CREATE TABLE events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        TEXT   NOT NULL,
    dedupe_key    TEXT   NOT NULL,
    received_at   BIGINT NOT NULL,
    content_type  TEXT   NOT NULL,
    body          BYTEA  NOT NULL,
    payload       TEXT,
    status        TEXT   NOT NULL DEFAULT 'received',
    status_reason TEXT,
    processed_at  BIGINT,
    UNIQUE (source, dedupe_key)
);
CREATE INDEX events_by_status ON events (status, id);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Lead state, one row per normalised email (see migrations/sqlite/0002_leads.sql).
CREATE TABLE leads (
    email       TEXT   PRIMARY KEY,
    state       TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    stage       TEXT   NOT NULL,
    stage_rank  BIGINT NOT NULL,
    max_rank    BIGINT NOT NULL,
    score       BIGINT NOT NULL,
    source      TEXT,
    campaign    TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX leads_by_stage ON leads (stage, email);

-- Which events touched which lead, with each one's input to it (the mapped patches and
-- engagements), its provider time and the clock it was qualified at: a late event rebuilds the
-- lead from these in provider-time order (src/pipeline/fold.rs).
CREATE TABLE lead_events (
    email       TEXT   NOT NULL,
    event_id    BIGINT NOT NULL REFERENCES events (id),
    occurred_at BIGINT,
    folded_at   BIGINT,
    items       TEXT,
    PRIMARY KEY (email, event_id)
);
CREATE INDEX lead_events_by_event ON lead_events (event_id);
CREATE INDEX lead_events_in_order ON lead_events (email, occurred_at, event_id);

-- The outbox (see migrations/sqlite/0003_outbox.sql); `claim_term` is the lease term a row in
-- flight was claimed under.
CREATE TABLE outbox (
    email            TEXT   PRIMARY KEY,
    version          BIGINT NOT NULL,
    payload          TEXT   NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    first_queued_at  BIGINT NOT NULL,
    inflight_version BIGINT,
    claimed_at       BIGINT,
    claim_term       BIGINT,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, email);
-- A queue table: rows come and go all day, so vacuum it before dead tuples slow the claims
-- (research pitfall 6).
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 200);

CREATE TABLE dead_letters (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    payload         TEXT   NOT NULL,
    crm             TEXT   NOT NULL,
    message         TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    first_queued_at BIGINT NOT NULL,
    dead_at         BIGINT NOT NULL
);
CREATE INDEX dead_letters_by_email ON dead_letters (email);

CREATE TABLE crm_delivered (
    email        TEXT   PRIMARY KEY,
    version      BIGINT NOT NULL,
    stage_rank   BIGINT,
    crm_ref      TEXT,
    delivered_at BIGINT NOT NULL
);

-- One deliverer per CRM account. A takeover happens only once `expires_at` passed and raises
-- `term`; the row is never deleted, so terms only grow. Deliberately a logged table: the term is
-- a fencing token and must survive a crash of the database.
CREATE TABLE delivery_lease (
    account    TEXT        PRIMARY KEY,
    holder     TEXT        NOT NULL,
    term       BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- The CRM quota as one token bucket per account, shared by every replica.
CREATE TABLE crm_quota (
    account    TEXT             PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ      NOT NULL
);
